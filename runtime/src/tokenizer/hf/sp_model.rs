//! The pieces of a SentencePiece `tokenizer.model`: a protobuf `ModelProto` whose field 1
//! repeats `SentencePiece { piece = 1 (string), score = 2 (float), type = 3 (enum) }`. Only
//! those fields are read; every other field is skipped by its wire type.

/// One piece of the model, in id order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Piece {
    /// The piece text (U+2581 for spaces, `<0xNN>` for byte pieces).
    pub(crate) text: String,
    pub(crate) score: f32,
    /// SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte (1 when absent).
    pub(crate) kind: i32,
}

/// A cursor over protobuf wire-format bytes.
struct Wire<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// A field's payload.
enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Wire<'a> {
        Wire { bytes, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or("a varint runs past the end")?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.bytes.len())
            .ok_or("a field runs past the end")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `(field number, payload)`, or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let s = self.take(4)?;
                Field::Fixed32([s[0], s[1], s[2], s[3]])
            }
            t => return Err(format!("wire type {t} is not supported")),
        };
        Ok(Some((key >> 3, field)))
    }
}

/// The pieces of a serialized `ModelProto`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut wire = Wire::new(bytes);
    let mut pieces = Vec::new();
    while let Some((number, field)) = wire.next()? {
        if number == 1 {
            let Field::Bytes(b) = field else {
                return Err("field 1 (pieces) is not a message".into());
            };
            pieces.push(parse_piece(b).map_err(|e| format!("piece {}: {e}", pieces.len()))?);
        }
    }
    if pieces.is_empty() {
        return Err("the model has no pieces".into());
    }
    Ok(pieces)
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, String> {
    let mut wire = Wire::new(bytes);
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: 1,
    };
    while let Some((number, field)) = wire.next()? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                piece.text = String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8")?;
            }
            (2, Field::Fixed32(b)) => piece.score = f32::from_le_bytes(b),
            (3, Field::Varint(v)) => piece.kind = v as i32,
            (1..=3, _) => return Err(format!("field {number} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece_bytes(text: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut p = vec![0x0A, text.len() as u8];
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.extend_from_slice(&[0x18, kind]);
        p
    }

    #[test]
    fn reads_pieces_and_skips_other_fields() {
        let mut model = Vec::new();
        for (t, s, k) in [("<unk>", 0.0, 2), ("▁a", -1.5, 1)] {
            let p = piece_bytes(t, s, k);
            model.push(0x0A);
            model.push(p.len() as u8);
            model.extend(p);
        }
        // A trainer spec (field 2) with a varint inside.
        model.extend_from_slice(&[0x12, 0x02, 0x08, 0x01]);
        let pieces = parse(&model).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1].text, "▁a");
        assert_eq!(pieces[1].score.to_bits(), (-1.5f32).to_bits());
        assert_eq!((pieces[0].kind, pieces[1].kind), (2, 1));
    }

    #[test]
    fn truncated_or_garbage_models_are_errors() {
        let p = piece_bytes("abc", 1.0, 1);
        let mut model = vec![0x0A, p.len() as u8];
        model.extend(p);
        for cut in 1..model.len() {
            assert!(parse(&model[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse(b"").is_err());
        assert!(parse(&[0xFF; 12]).is_err());
        assert!(parse(&[0x0B]).is_err());
    }
}
