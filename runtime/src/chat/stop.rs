//! Stop strings matched on generated text across token boundaries.
//!
//! Text arrives in pieces (one per token, from the UTF-8-safe stream decoder). A stop string
//! may be split over several pieces, so text that could still be the start of a stop string
//! is held back until the next pieces show whether it is one; the stop string itself and
//! everything after it is never emitted.

/// What [`StopMatcher::push`] lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that is certainly not part of a stop string: safe to print.
    pub text: String,
    /// A stop string was found; generation should end (`text` ends right before it).
    pub stopped: bool,
}

/// Finds the first occurrence of any of a set of stop strings in a stream of text pieces.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new<S: AsRef<str>>(stops: &[S]) -> StopMatcher {
        StopMatcher {
            stops: stops
                .iter()
                .map(|s| s.as_ref().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
            stopped: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Text held back so far (a possible start of a stop string).
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Add a piece of generated text; returns what can be printed now.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.stopped {
            return StopOutput {
                text: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(piece);
        // The earliest stop string wins (the longest when several start at the same place).
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s.len())))
            .min_by_key(|&(at, len)| (at, usize::MAX - len));
        if let Some((at, _)) = found {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.stopped = true;
            return StopOutput {
                text,
                stopped: true,
            };
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutput {
            text,
            stopped: false,
        }
    }

    /// Generation ended without a stop string: release what was held back.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Forget held text and the stopped state (for the next reply).
    pub fn reset(&mut self) {
        self.held.clear();
        self.stopped = false;
    }

    /// Length of the longest suffix of the held text that is a proper prefix of a stop
    /// string (it starts on a char boundary: stop strings are valid UTF-8).
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start)
                    && s.as_bytes().starts_with(&held.as_bytes()[start..])
                {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `pieces`; returns (printed text, stopped).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops);
        let mut out = String::new();
        for p in pieces {
            let o = m.push(p);
            out.push_str(&o.text);
            if o.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn no_stop_strings_pass_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["END"], &["abcENDxyz"]), ("abc".into(), true));
    }

    #[test]
    fn stop_split_across_pieces() {
        assert_eq!(
            run(
                &["</answer>"],
                &["The answer is 4.</", "ans", "wer>", " more"]
            ),
            ("The answer is 4.".into(), true)
        );
    }

    #[test]
    fn false_prefix_is_released() {
        let mut m = StopMatcher::new(&["STOP"]);
        assert_eq!(m.push("ab ST").text, "ab ");
        assert_eq!(m.held(), "ST");
        // "STA" is no longer a prefix of "STOP".
        assert_eq!(m.push("A").text, "STA");
        assert_eq!(m.push("ST").text, "");
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn earliest_stop_wins() {
        assert_eq!(run(&["b", "abc"], &["xab", "c"]), ("xa".into(), true));
        assert_eq!(
            run(&["\n\n", "User:"], &["hi\n", "\nUser:"]),
            ("hi".into(), true)
        );
    }

    #[test]
    fn multibyte_stop_strings() {
        assert_eq!(
            run(&["。"], &["你好", "世界。再见"]),
            ("你好世界".into(), true)
        );
        assert_eq!(
            run(&["🙂!"], &["ok 🙂", "?🙂", "!"]),
            ("ok 🙂?".into(), true)
        );
    }
}
