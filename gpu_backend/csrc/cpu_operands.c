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

static void dense_rows(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int8_t *dst,
                       int64_t ld) {
    for (int64_t r = 0; r < nr; r++) memcpy(dst + r * ld, op->data + (r0 + r) * op->ld + k0, (size_t)nk);
}

/* A k-major view's rows (element (r, k) at data[k * ld + r]): one byte transpose, where packing into
 * VNNI panels and then transposing their words took two passes (a tenth of a 512-channel weight
 * gradient, perf). */
static void dense_kmajor_rows(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int8_t *dst,
                              int64_t ld) {
    niti_transpose_bytes(op->data + k0 * op->ld + r0, op->ld, nk, nr, dst, ld); /* (k, r) -> (r, k) */
}

niti_operand niti_dense(const int8_t *data, int64_t rows, int64_t depth, int64_t ld, int k_major) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = rows;
    op.depth = depth;
    op.pack = dense_pack;
    op.pack_rows = k_major ? dense_kmajor_rows : dense_rows;
    op.data = data;
    op.ld = ld;
    op.k_major = k_major;
    return op;
}

/* An output pixel (image n, row y, column x); packing walks consecutive pixels (niti_nyx). */
typedef niti_nyx patch_pixel;

static patch_pixel pixel_at(const niti_im2col *g, int64_t row) { return niti_nyx_at(row, g->out_h, g->out_w); }

static inline void pixel_next(const niti_im2col *g, patch_pixel *p) { niti_nyx_next(p, g->out_h, g->out_w); }

/* Gather patch columns [k0, k0 + nk) of output pixel p into dst. Within one kernel row the k_w taps
 * read adjacent source pixels, so (without column upsampling) a kernel row is at most three runs:
 * zeros left of the image, one contiguous copy, zeros right of it. Without column upsampling
 * (dil_w == 1) the walk tracks the byte offset within the kernel row and needs no division. */
/* Columns [k0, k0 + nk) of a patch row, and where k0 falls: kernel row kh, byte rk within it. */
typedef struct {
    int64_t k0, nk, kh, rk;
} patch_cols;

static patch_cols cols_at(const niti_im2col *g, int64_t k0, int64_t nk) {
    int64_t row_len = g->k_w * g->ch;
    patch_cols c = {k0, nk, k0 / row_len, 0};
    c.rk = k0 - c.kh * row_len;
    return c;
}

static void gather_patch_row(const niti_im2col *g, const patch_pixel *p, const patch_cols *cols, int8_t *dst) {
    int64_t n = p->n, y = p->y, x = p->x;
    int64_t ch = g->ch, k = cols->k0, end = cols->k0 + cols->nk;
    if (g->dil_w == 1) {
        int64_t row_len = g->k_w * ch, src_row = g->src_w * ch;
        int64_t kh = cols->kh, rk = cols->rk;
        int64_t sb0 = (x * g->stride_w - g->pad_w) * ch;    /* source byte of the kernel row's start */
        while (k < end) {
            int64_t len = niti_min64(row_len - rk, end - k);
            int64_t sy = y * g->stride_h - g->pad_h + kh, iy = sy;
            int inside = sy >= 0;
            if (inside && g->dil_h != 1) {
                inside = sy % g->dil_h == 0;
                iy = sy / g->dil_h;
            }
            if (!inside || iy >= g->src_h) {
                memset(dst, 0, (size_t)len);
            } else { /* source bytes [sb, sb + len): zeros left of the row, a copy, zeros right of it */
                const int8_t *src = g->src + (n * g->src_h + iy) * src_row;
                int64_t sb = sb0 + rk, lo = niti_min64(niti_max64(-sb, 0), len);
                int64_t hi = niti_max64(niti_min64(src_row - sb, len), lo);
                if (lo > 0) memset(dst, 0, (size_t)lo);
                if (hi > lo) memcpy(dst + lo, src + sb + lo, (size_t)(hi - lo));
                if (hi < len) memset(dst + hi, 0, (size_t)(len - hi));
            }
            dst += len;
            k += len;
            rk += len;
            if (rk == row_len) rk = 0, kh++;
        }
        return;
    }
    while (k < end) { /* upsampled columns (a strided conv's input gradient): one tap at a time */
        int64_t tap = k / ch, c = k % ch;
        int64_t kh = tap / g->k_w, kw = tap % g->k_w;
        int64_t len = niti_min64(ch - c, end - k);
        int64_t sy = y * g->stride_h - g->pad_h + kh, sx = x * g->stride_w - g->pad_w + kw;
        const int8_t *src = NULL;
        if (sy >= 0 && sy % g->dil_h == 0 && sy / g->dil_h < g->src_h && sx >= 0 && sx % g->dil_w == 0 &&
            sx / g->dil_w < g->src_w)
            src = g->src + ((n * g->src_h + sy / g->dil_h) * g->src_w + sx / g->dil_w) * ch + c;
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
    patch_pixel px = pixel_at(op->patches, r0);
    patch_cols cols = cols_at(op->patches, k0, nk);
    for (int64_t p = 0; p * W < nr; p++) {
        int64_t rows = niti_min64(W, nr - p * W);
        for (int64_t r = 0; r < rows; r++, pixel_next(op->patches, &px))
            gather_patch_row(op->patches, &px, &cols, scratch + r * nk);
        niti_pack_rowmajor(scratch, nk, rows, nk, W, flip, dst + p * kg * W, corr ? corr + p * W : NULL);
    }
}

/* Group g of a transposed patch pack straight from the image, when its 4 pixels are adjacent in one
 * output row and every window lies inside the image columns (no upsampling): kernel row kh of
 * pixel x + i is the source row's bytes from (x + i) * stride_w - pad_w, so the 4 lines are one
 * source row at offsets i * stride_w * ch and need no gather. Rows outside the image are zero.
 * Returns 0 (nothing written) when the group does not qualify. */
static int transposed_group_direct(const niti_im2col *g, const patch_pixel *px, const patch_cols *cols, int W,
                                   int64_t kg, int64_t gi, uint8_t flip, uint32_t *dst, uint32_t *words) {
    int64_t ch = g->ch, row_len = g->k_w * ch, step = g->stride_w * ch, nr = cols->nk;
    int64_t sx0 = px->x * g->stride_w - g->pad_w;
    if (g->dil_h != 1 || g->dil_w != 1 || px->x + 3 >= g->out_w || sx0 < 0 ||
        sx0 + 3 * g->stride_w + g->k_w > g->src_w)
        return 0;
    uint32_t flip_word = 0x01010101u * flip;
    /* the group's nr words, a kernel row per interleave, then whole panel rows out of them */
    int64_t kh = cols->kh, rk = cols->rk;
    for (int64_t r = 0; r < nr;) {
        int64_t seg = niti_min64(row_len - rk, nr - r);
        int64_t sy = px->y * g->stride_h - g->pad_h + kh;
        if (sy < 0 || sy >= g->src_h) {
            for (int64_t j = 0; j < seg; j++) words[r + j] = flip_word;
        } else {
            const int8_t *l0 = g->src + ((px->n * g->src_h + sy) * g->src_w + sx0) * ch + rk;
            niti_interleave4(l0, l0 + step, l0 + 2 * step, l0 + 3 * step, seg, flip, words + r);
        }
        r += seg;
        rk = 0;
        kh++;
    }
    for (int64_t j = nr; j < niti_round_up(nr, W); j++) words[j] = flip_word; /* the last panel's rows past nr */
    if (W == NITI_NR) { /* the B side: a constant-size copy the compiler inlines as vector moves */
        for (int64_t p = 0; p * W < nr; p++) memcpy(dst + p * kg * W + gi * W, words + p * W, sizeof(uint32_t) * NITI_NR);
    } else {
        for (int64_t p = 0; p * W < nr; p++) memcpy(dst + p * kg * W + gi * W, words + p * W, sizeof(uint32_t) * (size_t)W);
    }
    return 1;
}

/* rows = patch columns, depth = output pixels. One 4-pixel group at a time: straight from the image
 * where possible (transposed_group_direct), else gather the four pixels' patch columns [r0, r0+nr)
 * (4 lines of nr bytes), then interleave them into every panel. */
static void patches_transposed_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W,
                                    uint8_t flip, uint32_t *dst, int32_t *corr, int8_t *scratch) {
    int64_t kg = (nk + 3) / 4;
    uint32_t flip_word = 0x01010101u * flip;
    int8_t *zero_line = scratch + 4 * NITI_BLOCK_MAX;
    memset(zero_line, 0, (size_t)nr);
    if (corr) memset(corr, 0, sizeof(int32_t) * (size_t)niti_round_up(nr, W));
    patch_pixel px = pixel_at(op->patches, k0);
    patch_cols cols = cols_at(op->patches, r0, nr);
    for (int64_t g = 0; g < kg; g++) {
        if (!corr && 4 * g + 3 < nk &&
            transposed_group_direct(op->patches, &px, &cols, W, kg, g, flip, dst, (uint32_t *)scratch)) {
            for (int t = 0; t < 4; t++) pixel_next(op->patches, &px);
            continue;
        }
        const int8_t *line[4];
        for (int t = 0; t < 4; t++) {
            if (4 * g + t < nk) {
                gather_patch_row(op->patches, &px, &cols, scratch + t * NITI_BLOCK_MAX);
                pixel_next(op->patches, &px);
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

/* Patch rows gathered straight into place: the row-major form is im2col's own. */
static void patches_rows(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int8_t *dst,
                         int64_t ld) {
    patch_pixel px = pixel_at(op->patches, r0);
    patch_cols cols = cols_at(op->patches, k0, nk);
    for (int64_t r = 0; r < nr; r++, pixel_next(op->patches, &px)) gather_patch_row(op->patches, &px, &cols, dst + r * ld);
}

niti_operand niti_patches(const niti_im2col *g) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = g->batch * g->out_h * g->out_w;
    op.depth = g->k_h * g->k_w * g->ch;
    op.pack = patches_pack;
    op.pack_rows = patches_rows;
    op.scratch_bytes = NITI_PANEL_MAX * NITI_DEPTH_MAX;
    op.patches = g;
    return op;
}

niti_operand niti_patches_transposed(const niti_im2col *g) {
    niti_operand op = niti_patches(g);
    int64_t rows = op.rows;
    op.rows = op.depth;
    op.depth = rows;
    op.pack = patches_transposed_pack;
    op.pack_rows = NULL; /* rows are patch columns: strided across pixels */
    op.scratch_bytes = 5 * NITI_BLOCK_MAX; /* four pixel lines and a zero line, or a group's words */
    return op;
}
