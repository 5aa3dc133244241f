/* cpu_operands.c: the GEMM operands: dense matrices (either orientation) and conv patches gathered
 * on the fly (im2col without the im2col matrix), each packing any block of itself into panels. */
#include <string.h>

#include "cpu_internal.h"

static void dense_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W, uint8_t flip,
                       uint32_t *dst, int32_t *corr, int8_t *scratch) {
    (void)scratch;
    if (op->k_major) niti_pack_kmajor(op->data + k0 * op->ld + r0, op->ld, nr, nk, W, flip, dst, corr);
    else niti_pack_rowmajor(op->data + r0 * op->ld + k0, op->ld, nr, nk, W, flip, dst, corr);
}

niti_operand niti_dense(const int8_t *data, int64_t rows, int64_t depth, int64_t ld, int k_major) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = rows;
    op.depth = depth;
    op.pack = dense_pack;
    op.data = data;
    op.ld = ld;
    op.k_major = k_major;
    return op;
}

/* Gather patch columns [k0, k0 + nk) of output pixel `row` into dst. Within one kernel row the
 * k_w taps read adjacent source pixels, so (without column upsampling) a kernel row is at most
 * three runs: zeros left of the image, one contiguous copy, zeros right of it. */
static void gather_patch_row(const niti_im2col *g, int64_t row, int64_t k0, int64_t nk, int8_t *dst) {
    int64_t pixels = g->out_h * g->out_w;
    int64_t n = row / pixels, yx = row % pixels;
    int64_t y = yx / g->out_w, x = yx % g->out_w;
    int64_t ch = g->ch, k = k0, end = k0 + nk;
    while (k < end) {
        int64_t tap = k / ch, c = k % ch;
        int64_t kh = tap / g->k_w, kw = tap % g->k_w;
        int64_t len = niti_min64((g->k_w - kw) * ch - c, end - k); /* up to the end of this kernel row */
        int64_t sy = y * g->stride_h - g->pad_h + kh, sx = x * g->stride_w - g->pad_w + kw;
        const int8_t *src = NULL;
        if (sy >= 0 && sy % g->dil_h == 0 && sy / g->dil_h < g->src_h) {
            int64_t iy = sy / g->dil_h;
            if (g->dil_w == 1) {
                if (sx < 0) len = niti_min64(len, -sx * ch - c);
                else if (sx < g->src_w) {
                    len = niti_min64(len, (g->src_w - sx) * ch - c);
                    src = g->src + ((n * g->src_h + iy) * g->src_w + sx) * ch + c;
                }
            } else { /* upsampled columns: one tap at a time */
                len = niti_min64(len, ch - c);
                if (sx >= 0 && sx % g->dil_w == 0 && sx / g->dil_w < g->src_w)
                    src = g->src + ((n * g->src_h + iy) * g->src_w + sx / g->dil_w) * ch + c;
            }
        }
        if (src) memcpy(dst, src, (size_t)len);
        else memset(dst, 0, (size_t)len);
        dst += len;
        k += len;
    }
}

/* One panel at a time: gather its W patch rows (W x nk bytes, stays in L1), then pack them. */
static void patches_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W, uint8_t flip,
                         uint32_t *dst, int32_t *corr, int8_t *scratch) {
    int64_t kg = (nk + 3) / 4;
    for (int64_t p = 0; p * W < nr; p++) {
        int64_t rows = niti_min64(W, nr - p * W);
        for (int64_t r = 0; r < rows; r++) gather_patch_row(op->patches, r0 + p * W + r, k0, nk, scratch + r * nk);
        niti_pack_rowmajor(scratch, nk, rows, nk, W, flip, dst + p * kg * W, corr ? corr + p * W : NULL);
    }
}

/* rows = patch columns, depth = output pixels. One 4-pixel group at a time: gather the four pixels'
 * patch columns [r0, r0+nr) (4 lines of nr bytes), then interleave them into every panel. */
static void patches_transposed_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W,
                                    uint8_t flip, uint32_t *dst, int32_t *corr, int8_t *scratch) {
    int64_t kg = (nk + 3) / 4;
    uint32_t flip_word = 0x01010101u * flip;
    int8_t *zero_line = scratch + 4 * NITI_BLOCK_MAX;
    memset(zero_line, 0, (size_t)nr);
    if (corr) memset(corr, 0, sizeof(int32_t) * (size_t)niti_round_up(nr, W));
    for (int64_t g = 0; g < kg; g++) {
        const int8_t *line[4];
        for (int t = 0; t < 4; t++) {
            if (4 * g + t < nk) {
                gather_patch_row(op->patches, k0 + 4 * g + t, r0, nr, scratch + t * NITI_BLOCK_MAX);
                line[t] = scratch + t * NITI_BLOCK_MAX;
                if (corr)
                    for (int64_t r = 0; r < nr; r++) corr[r] += line[t][r];
            } else {
                line[t] = zero_line;
            }
        }
        for (int64_t p = 0; p * W < nr; p++) {
            int64_t rows = niti_min64(W, nr - p * W);
            uint32_t *out = dst + p * kg * W + g * W;
            niti_interleave4(line[0] + p * W, line[1] + p * W, line[2] + p * W, line[3] + p * W, rows, flip, out);
            for (int64_t r = rows; r < W; r++) out[r] = flip_word;
        }
    }
    if (corr)
        for (int64_t r = 0; r < nr; r++) corr[r] *= 128;
}

niti_operand niti_patches(const niti_im2col *g) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = g->batch * g->out_h * g->out_w;
    op.depth = g->k_h * g->k_w * g->ch;
    op.pack = patches_pack;
    op.scratch_bytes = NITI_PANEL_MAX * NITI_KC_MAX;
    op.patches = g;
    return op;
}

niti_operand niti_patches_transposed(const niti_im2col *g) {
    niti_operand op = niti_patches(g);
    int64_t rows = op.rows;
    op.rows = op.depth;
    op.depth = rows;
    op.pack = patches_transposed_pack;
    op.scratch_bytes = 5 * NITI_BLOCK_MAX; /* four pixel lines and a zero line */
    return op;
}
