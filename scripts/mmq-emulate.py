#!/usr/bin/env python3
"""CPU emulation of the int8 tensor-core prefill kernel (matmul_mmq_tile in cuda/kernels/matmul.cu),
for checking its indexing without a GPU.

The loaders, the shared-memory tiles, the fragment loads and the per-block scale application are
transcribed from the kernel (keep them in step when it changes); what one mma.sync.m16n8k32
.s8.s8.s32 computes from the 32 lanes' registers is taken from the PTX ISA text ("Matrix
Fragments for mma.m16n8k32": A ai row groupID for i < 4 or 8 <= i < 12, else groupID + 8,
col 4 * threadID_in_group + (i & 3) (+16 for i >= 8); B bi k 4t + (i & 3) (+16 for i >= 4),
col groupID; C ci row groupID (+8 for i >= 2), col 2t + (i & 1)), not from the kernel. Random
weight blocks (sane f16 scales) are dequantized by the Python `gguf` package; activations go
through ggml's Q8_1 rounding; the result must match the f64 product within the GPU test's
tolerance. Usage: `pip install gguf numpy; scripts/mmq-emulate.py [TYPE ...]`, shape with
SHAPE=nrows,ncols,ntok (default 67,512,70: ragged row and token tiles, four K stages).
"""
import numpy as np, struct, sys
from gguf import quants, GGMLQuantizationType as T

M32 = 0xFFFFFFFF
def f16(b, o): return float(np.frombuffer(bytes(b[o:o+2]), dtype=np.float16)[0])
def ld32(b, o): return struct.unpack_from('<I', bytes(b[o:o+4]))[0]
def sar(x, s):  # C arithmetic shift of a signed int
    x = x - (1 << 32) if x & 0x80000000 else x
    return (x >> s) & M32
def sub_bytes(x, o4): return ((((x | 0x80808080) - o4) & M32) ^ 0x80808080) & M32
def spread4(h): return (((h & 1) << 4) | ((h & 2) << 11) | ((h & 4) << 18) | ((h & 8) << 25)) & M32
KV = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
def lookup4(v):
    r = 0
    for i in range(4): r |= (KV[(v >> (8*i)) & 0xF] & 0xFF) << (8*i)
    return r
def scale_min_k4(j, q):
    if j < 4: return q[j] & 63, q[j+4] & 63
    return (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)

def load(ty, row, blk):
    q = [0]*8
    if ty == 'Q4_0' or ty == 'IQ4_NL':
        p = blk*18; d = f16(row, p); m = 0.0
        for w in range(4):
            v = ld32(row, p+2+4*w)
            if ty == 'Q4_0':
                q[w] = sub_bytes(v & 0x0F0F0F0F, 0x08080808); q[w+4] = sub_bytes(sar(v, 4) & 0x0F0F0F0F, 0x08080808)
            else:
                q[w] = lookup4(v & 0x0F0F0F0F); q[w+4] = lookup4((v >> 4) & 0x0F0F0F0F)
    elif ty == 'Q4_1':
        p = blk*20; d = f16(row, p); m = f16(row, p+2)
        for w in range(4):
            v = ld32(row, p+4+4*w); q[w] = v & 0x0F0F0F0F; q[w+4] = sar(v, 4) & 0x0F0F0F0F
    elif ty == 'Q5_0':
        p = blk*22; d = f16(row, p); m = 0.0; qh = ld32(row, p+2)
        for w in range(4):
            v = ld32(row, p+6+4*w)
            q[w] = sub_bytes((v & 0x0F0F0F0F) | spread4(qh >> (4*w)), 0x10101010)
            q[w+4] = sub_bytes((sar(v, 4) & 0x0F0F0F0F) | spread4(qh >> (4*w+16)), 0x10101010)
    elif ty == 'Q8_0':
        p = blk*34; d = f16(row, p); m = 0.0
        for w in range(8): q[w] = ld32(row, p+2+4*w)
    elif ty in ('Q4_K', 'Q5_K'):
        bb = 144 if ty == 'Q4_K' else 176
        p = (blk//8)*bb; sub = blk % 8
        sc, mn = scale_min_k4(sub, row[p+4:p+16])
        shift = 4*(sub % 2)
        qs = p + (16 if ty == 'Q4_K' else 48) + 32*(sub//2)
        for w in range(8):
            lo = sar(ld32(row, qs+4*w), shift) & 0x0F0F0F0F
            if ty == 'Q5_K':
                hi = ((sar(ld32(row, p+16+4*w), sub) & 0x01010101) << 4) & M32
                lo |= hi
            q[w] = lo
        d = f16(row, p)*sc; m = -f16(row, p+2)*mn
    return q, np.float32(d), np.float32(m)

def q8_1(x):  # ggml quantize_row_q8_1_ref, per 32-block; returns list of (d16 as f32, qs int8[32])
    out = []
    for b in range(len(x)//32):
        v = x[32*b:32*b+32].astype(np.float32)
        amax = np.float32(np.max(np.abs(v))); d = amax/np.float32(127)
        idv = np.float32(1)/d if d != 0 else np.float32(0)
        qs = np.array([int(np.sign(t)*np.floor(abs(t)+0.5)) for t in (v*idv)], dtype=np.int8)
        out.append((np.float32(np.float16(d)), qs))
    return out

def s8(word, j): v = (word >> (8*j)) & 0xFF; return v - 256 if v >= 128 else v
def word_of(arr, r, c): return int(np.frombuffer(arr[r, c:c+4].tobytes(), dtype='<u4')[0])

def mma(a_regs, b_regs):  # a_regs[lane][4], b_regs[lane][2] -> c[lane][4], PTX ISA mapping
    A = np.zeros((16, 32), np.int64); B = np.zeros((32, 8), np.int64)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(16):
            row = g if (i < 4 or 8 <= i < 12) else g + 8
            col = 4*t + (i & 3) + (16 if i >= 8 else 0)
            A[row, col] = s8(a_regs[lane][i//4], i % 4)
        for i in range(8):
            k = 4*t + (i & 3) + (16 if i >= 4 else 0)
            B[k, g] = s8(b_regs[lane][i//4], i % 4)
    C = A @ B
    return [[int(C[(lane >> 2) + (8 if e >= 2 else 0), 2*(lane % 4) + (e & 1)]) for e in range(4)] for lane in range(32)]

def kernel(ty, W, X8, nrows, ncols, ntok, row_bytes):
    HAS_MIN = ty in ('Q4_1', 'Q4_K', 'Q5_K')
    nblk = ncols // 32
    Y = np.full((ntok, nrows), np.nan, np.float32)
    for bx in range((nrows + 63)//64):
        for by in range((ntok + 63)//64):
            row_base, tok_base = 64*bx, 64*by
            acc = {}
            for b0 in range(0, nblk, 4):
                ws = np.zeros((64, 144), np.uint8); xs = np.zeros((64, 144), np.uint8)
                wd = np.zeros((64, 4), np.float32); wmin = np.zeros((64, 4), np.float32)
                xd = np.zeros((64, 4), np.float32); xsum = np.zeros((64, 4), np.float32)
                for tid in range(128):
                    for i in range(2):
                        e = tid + i*128; r, kb = e//4, e % 4
                        row, blk = row_base + r, b0 + kb
                        if row < nrows and blk < nblk:
                            q, d, m = load(ty, W[row*row_bytes:(row+1)*row_bytes], blk)
                        else:
                            q, d, m = [0]*8, np.float32(0), np.float32(0)
                        ws[r, kb*32:kb*32+32] = np.frombuffer(struct.pack('<8I', *q), np.uint8)
                        wd[r, kb] = d; wmin[r, kb] = m
                    for i in range(2):
                        e = tid + i*128; t, kb = e//4, e % 4
                        tok, blk = tok_base + t, b0 + kb
                        if tok < ntok and blk < nblk:
                            d, qs = X8[tok*nblk + blk]
                            xs[t, kb*32:kb*32+32] = qs.view(np.uint8)
                            xd[t, kb] = d
                            xsum[t, kb] = d*np.float32(int(qs.astype(np.int64).sum())) if HAS_MIN else 0
                for kb in range(4):
                    ks = kb*32
                    for warp in range(4):
                        wm, wn = warp//2, warp % 2
                        for mt in range(2):
                            for nt in range(4):
                                areg, breg = [], []
                                for lane in range(32):
                                    g, tig = lane//4, lane % 4
                                    r0 = wm*32 + mt*16; n0 = wn*32 + nt*8
                                    areg.append([word_of(ws, r0+g, ks+4*tig), word_of(ws, r0+g+8, ks+4*tig),
                                                 word_of(ws, r0+g, ks+16+4*tig), word_of(ws, r0+g+8, ks+16+4*tig)])
                                    breg.append([word_of(xs, n0+g, ks+4*tig), word_of(xs, n0+g, ks+16+4*tig)])
                                c = mma(areg, breg)
                                for lane in range(32):
                                    g, tig = lane//4, lane % 4
                                    for e in range(4):
                                        r = wm*32 + mt*16 + g + 8*(e >> 1)
                                        t = wn*32 + nt*8 + 2*tig + (e & 1)
                                        v = wd[r, kb]*xd[t, kb]*np.float32(c[lane][e])
                                        if HAS_MIN: v += wmin[r, kb]*xsum[t, kb]
                                        key = (warp, mt, nt, lane, e)
                                        acc[key] = acc.get(key, np.float32(0)) + np.float32(v)
            for (warp, mt, nt, lane, e), v in acc.items():
                wm, wn = warp//2, warp % 2; g, tig = lane//4, lane % 4
                row = row_base + wm*32 + mt*16 + g + (8 if e >= 2 else 0)
                tok = tok_base + wn*32 + nt*8 + 2*tig + (e & 1)
                if row < nrows and tok < ntok: Y[tok, row] = v
    return Y

rng = np.random.default_rng(1)
GT = {'Q4_0': T.Q4_0, 'Q4_1': T.Q4_1, 'Q5_0': T.Q5_0, 'Q8_0': T.Q8_0, 'IQ4_NL': T.IQ4_NL, 'Q4_K': T.Q4_K, 'Q5_K': T.Q5_K}
ok = True
for ty in sys.argv[1:] or GT:
    import os; nrows, ncols, ntok = map(int, os.environ.get("SHAPE", "67,512,70").split(","))
    bs, bb = quants.GGML_QUANT_SIZES[GT[ty]]
    row_bytes = ncols//bs*bb
    W = bytearray(rng.integers(0, 256, nrows*row_bytes, dtype=np.uint8).tobytes())
    # sane f16 scales: overwrite d (and m / dmin) of every block
    for r in range(nrows):
        for b in range(ncols//bs):
            p = r*row_bytes + b*bb
            nsc = 2 if ty in ('Q4_1', 'Q4_K', 'Q5_K') else 1
            for s in range(nsc):
                W[p+2*s:p+2*s+2] = np.float16(rng.uniform(-0.05, 0.05)).tobytes()
    Wd = quants.dequantize(np.frombuffer(bytes(W), np.uint8).reshape(nrows, row_bytes), GT[ty]).astype(np.float64)
    X = rng.uniform(-1, 1, (ntok, ncols)).astype(np.float32)
    X8 = []
    for t in range(ntok): X8 += q8_1(X[t])
    Xd = np.array([[X8[t*(ncols//32) + k//32][0]*float(X8[t*(ncols//32) + k//32][1][k % 32]) for k in range(ncols)] for t in range(ntok)])
    want = Xd @ Wd.T
    got = kernel(ty, W, X8, nrows, ncols, ntok, row_bytes)
    err = np.abs(got - want); tol = (np.abs(Xd) @ np.abs(Wd).T)*5e-5 + 1e-5
    bad = ~(err <= tol)
    print(ty, 'max err', float(np.nanmax(err)), 'bad', int(bad.sum()), 'nan', int(np.isnan(got).sum()))
    ok &= not bad.any()
print('ALL OK' if ok else 'MISMATCH')
sys.exit(0 if ok else 1)
