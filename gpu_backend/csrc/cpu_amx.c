/* cpu_amx.c: the AMX-INT8 GEMM engine (Sapphire Rapids and newer Xeons).
 *
 * TDPBSSD multiplies a 16 x 64 int8 tile of A (16 rows, 64 consecutive k each) by a 16 x 64 tile
 * of B in "VNNI" layout (16 rows of 4-k groups, each row 16 columns x 4 bytes) into a 16 x 16 int32
 * tile: 16,384 MACs in one instruction, signed x signed, so unlike vpdpbusd no +128 bias and no
 * row correction. The kernel keeps a 32 x 32 tile of C in four accumulator tiles (tmm0-3) and per
 * 64-deep step loads two A tiles (tmm4-5) and two B tiles (tmm6-7), each used twice: the 2 x 2
 * blocking that fits AMX's eight tile registers.
 *
 * Packed layouts (see niti_engine in cpu_internal.h), k_pad = the slice depth rounded up to 64:
 *   - A panel: 32 rows of k_pad bytes, row-major: each A tile is 16 rows at stride k_pad. Conv
 *     patches and dense matrices are gathered, copied or byte-transposed straight into it
 *     (pack_rows); transposed patches are packed into 16-row VNNI panels first, then transposed
 *     16 x 16 words at a time.
 *   - B panel: the VNNI panel of cpu_pack.c with 32 rows (words (g, r) at byte 128 g + 4 r, no
 *     flip), so a B tile is 16 groups at stride 128 bytes, columns 0-15 or 16-31.
 * Padding k and rows are zeros, which add nothing to the sums.
 *
 * Tile state is per thread and, on Linux, needs the process's permission for the tile-data
 * register state (arch_prctl ARCH_REQ_XCOMP_PERM): niti_amx_request asks once per choice of
 * engine, and each thread loads the tile configuration when it enters a GEMM (the engine's enter).
 */
#include "cpu_internal.h"

#if NITI_AMX

#include <cpuid.h>
#include <errno.h>
#include <stdatomic.h>
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#define AMX_TILE_K 64           /* bytes of k per tile row */
#define AMX_B_ROW 128           /* bytes per 4-k group of a 32-column B panel */

/* Set once the OS has granted the tile state: the grant is process-wide and never withdrawn, so
 * later requests (every niti_set_engine("amx")) need neither CPUID nor a system call. */
static atomic_int amx_granted = 0;

int niti_amx_request(void) {
    if (atomic_load(&amx_granted)) return NITI_OK;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) || !(edx & (1u << 25)))
        return niti_fail(NITI_E_ARG, "AMX-INT8: this CPU does not have it (CPUID leaf 7: no AMX-TILE/AMX-INT8)");
#ifdef NITI_DENY_AMX_PERMISSION /* test builds: act as an OS that refuses the tile state */
    errno = EPERM;
    long refused = -1;
#else
    long refused = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
#endif
    if (refused)
        return niti_fail(NITI_E_ARG,
                         "AMX-INT8: the OS refused the tile-data permission (arch_prctl ARCH_REQ_XCOMP_PERM: %s; "
                         "Linux 5.16 or newer grants it); using the next engine",
                         strerror(errno));
    atomic_store(&amx_granted, 1);
    return NITI_OK;
}

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16]; /* bytes per row of tile i */
    uint8_t rows[16];
} __attribute__((packed)) tile_config;

/* Every tile 16 rows x 64 bytes: A tiles 16 x 64 int8, B tiles 16 groups x 16 columns x 4 int8, C
 * tiles 16 x 16 int32. */
static void amx_enter(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* Not _tile_loadconfig: gcc 12's macro declares a pointer-sized memory operand, so the stores
     * that fill the 64-byte configuration are dead to the optimiser and dropped (ldtilecfg then
     * faults on a garbage configuration). */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

static void amx_leave(void) { _tile_release(); }

/* Words (g, r) of a 16-row VNNI panel, groups g0 .. g0+15 -> 16 rows of 64 bytes at dst (stride
 * ld): row r gathers word r of each group. */
static void words_to_rows16(const uint32_t *words, int8_t *dst, int64_t ld) {
    const __m512i group_stride = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224,
                                                   240);
    for (int r = 0; r < 16; r++)
        _mm512_storeu_si512(dst + r * ld, _mm512_i32gather_epi32(group_stride, (const void *)(words + r), 4));
}

/* Panels packed at the natural VNNI stride (kg = ceil(nk / 4) groups each) -> at the padded stride
 * (k_pad / 4 groups), zero groups in between. Last panel first: each moves up, never over one still
 * to move. */
static void spread_panels(uint8_t *dst, int64_t panels, int64_t panel_rows, int64_t kg, int64_t k_pad) {
    int64_t row_bytes = 4 * panel_rows, kg_pad = k_pad / 4;
    if (kg == kg_pad) return;
    for (int64_t p = panels - 1; p >= 0; p--) {
        uint8_t *to = dst + p * kg_pad * row_bytes;
        memmove(to, dst + p * kg * row_bytes, (size_t)(kg * row_bytes));
        memset(to + kg * row_bytes, 0, (size_t)((kg_pad - kg) * row_bytes));
    }
}

static void amx_pack_a(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst_,
                       int32_t *corr, int8_t *scratch, void *work) {
    (void)corr; /* signed x signed: no bias to correct */
    int8_t *dst = dst_;
    int64_t k_pad = niti_round_up(nk, AMX_TILE_K), rows_pad = niti_round_up(nr, NITI_AMX_MR);
    if (op->pack_rows) {
        op->pack_rows(op, r0, nr, k0, nk, dst, k_pad);
        if (k_pad > nk)
            for (int64_t r = 0; r < nr; r++) memset(dst + r * k_pad + nk, 0, (size_t)(k_pad - nk));
    } else {
        /* all rows at once into 16-row VNNI panels (one pass over the source), then each panel's
         * 16 x 16 word blocks transposed into rows */
        uint32_t *words = work;
        int64_t panels = (nr + 15) / 16;
        op->pack(op, r0, nr, k0, nk, 16, 0x00, words, NULL, scratch);
        spread_panels((uint8_t *)words, panels, 16, (nk + 3) / 4, k_pad);
        for (int64_t q = 0; q < panels; q++)
            for (int64_t g0 = 0; g0 < k_pad / 4; g0 += 16)
                words_to_rows16(words + q * 4 * k_pad + g0 * 16, dst + 16 * q * k_pad + 4 * g0, k_pad);
    }
    /* rows past nr (the last 16-row panel above may have written some) are zeros */
    memset(dst + nr * k_pad, 0, (size_t)((rows_pad - nr) * k_pad));
}

/* All rows at once, so an operand that gathers (conv patches) walks its pixels once for every panel. */
static void amx_pack_b(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst,
                       int8_t *scratch) {
    op->pack(op, r0, nr, k0, nk, NITI_AMX_NR, 0x00, dst, NULL, scratch);
    spread_panels(dst, (nr + NITI_AMX_NR - 1) / NITI_AMX_NR, NITI_AMX_NR, (nk + 3) / 4, niti_round_up(nk, AMX_TILE_K));
}

/* 32 x 32 tile of C <-c_mode- A (32 rows at stride lda, k_pad = kc rounded up to 64 bytes each) x
 * B panel (32 columns, k_pad deep). A's rows need not be packed: any readable rows do, since the B
 * panel's zero padding past kc cancels whatever A holds there. */
void niti_amx_tile32(int64_t kc, const int8_t *a, int64_t lda, const uint8_t *b, void *c, int64_t ldc, int c_mode) {
    int64_t k_pad = niti_round_up(kc, AMX_TILE_K);
    int32_t *c32 = c;
    int narrow = c_mode == NITI_C_STORE32 || c_mode == NITI_C_ADD32;
    if (c_mode == NITI_C_ADD32) { /* partial sums stay exact in int32: no bias, |sum| <= K * 128^2 */
        _tile_loadd(0, c32, ldc * 4);
        _tile_loadd(1, c32 + 16, ldc * 4);
        _tile_loadd(2, c32 + 16 * ldc, ldc * 4);
        _tile_loadd(3, c32 + 16 * ldc + 16, ldc * 4);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t k = 0; k < k_pad; k += AMX_TILE_K) {
        /* Each tile loaded just before its first use, so a load waits only for the dot
         * products of the previous step that read its register (tile registers are not renamed):
         * measured 5-10 % faster than four loads then four dot products. */
        _tile_loadd(4, a + k, lda);
        _tile_loadd(6, b + k / 4 * AMX_B_ROW, AMX_B_ROW);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, b + k / 4 * AMX_B_ROW + 64, AMX_B_ROW);
        _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, a + 16 * lda + k, lda);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    if (narrow) {
        _tile_stored(0, c32, ldc * 4);
        _tile_stored(1, c32 + 16, ldc * 4);
        _tile_stored(2, c32 + 16 * ldc, ldc * 4);
        _tile_stored(3, c32 + 16 * ldc + 16, ldc * 4);
        return;
    }
    int32_t t[32 * 32] __attribute__((aligned(64)));
    _tile_stored(0, t, 128);
    _tile_stored(1, t + 16, 128);
    _tile_stored(2, t + 16 * 32, 128);
    _tile_stored(3, t + 16 * 32 + 16, 128);
    int64_t *c64 = c;
    for (int i = 0; i < 32; i++) {
        for (int h = 0; h < 32; h += 8) {
            __m512i v = _mm512_cvtepi32_epi64(_mm256_load_si256((const __m256i *)(t + i * 32 + h)));
            int64_t *p = c64 + i * ldc + h;
            if (c_mode == NITI_C_ADD64) v = _mm512_add_epi64(v, _mm512_loadu_si512(p));
            _mm512_storeu_si512(p, v);
        }
    }
}

/* The engine's kernel: A is a packed panel (32 rows at stride k_pad). */
static void amx_kernel(int64_t kc, const void *a_panel, const void *b_panel, const int32_t *corr, void *c, int64_t ldc,
                       int c_mode) {
    (void)corr;
    niti_amx_tile32(kc, a_panel, niti_round_up(kc, AMX_TILE_K), b_panel, c, ldc, c_mode);
}

_Static_assert(NITI_AMX_MR * NITI_AMX_KC_ROWS_MAX <= NITI_AMX_MR * 8 * NITI_AMX_KC_MAX,
               "a_work holds the one ragged panel packed at the deeper in-place slices");
_Static_assert(NITI_AMX_NR * 24 <= NITI_BLOCK_MAX && NITI_AMX_MR * 8 <= NITI_BLOCK_MAX,
               "operand scratch (cpu_operands.c) is sized for NITI_BLOCK_MAX rows per pack");

const niti_engine niti_amx_engine = {
    .name = "amx",
    .mr = NITI_AMX_MR,
    .nr = NITI_AMX_NR,
    .k_align = AMX_TILE_K,
    .kc_max = NITI_AMX_KC_MAX,
    .kc_rows_max = NITI_AMX_KC_ROWS_MAX,
    .mc = NITI_AMX_MR * 8,          /* 256 rows x 1 KB: the A block stays in L2 */
    .nc_long_k = NITI_AMX_NR * 24,  /* 768 columns of B per K slice */
    .a_work_bytes = NITI_AMX_MR * 8 * NITI_AMX_KC_MAX, /* mc rows of 16-row VNNI panels */
    .pack_a = amx_pack_a,
    .pack_b = amx_pack_b,
    .kernel = amx_kernel,
    .kernel_rows = niti_amx_tile32,
    .enter = amx_enter,
    .leave = amx_leave,
};

#endif /* NITI_AMX */
