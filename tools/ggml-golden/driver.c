// Golden-vector driver: links against llama.cpp's own ggml.c + ggml-quants.c (never committed here) and
// writes, for every GGML block type, the exact bytes produced by ggml's quantizers and the floats produced
// by ggml's dequantizers. Driven by tools/ggml-golden/generate.mjs; see README.md there.
//
// Usage:
//   driver quant  <outdir> <datasets.txt>   (one line per dataset: name rows rowlen input.f32 importance.f32)
//   driver random <outdir> <nelements> <seed>
//   driver types
// Each produced entry is reported as one JSON object per line on stdout.

#include "ggml.h"
#include "ggml-backend.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

// ---- stubs for symbols ggml.c references but the quantizers never reach ----
void ggml_critical_section_start(void) {}
void ggml_critical_section_end(void) {}
enum ggml_backend_buffer_usage ggml_backend_buffer_get_usage(ggml_backend_buffer_t b) { (void) b; abort(); }
void ggml_backend_tensor_memset(struct ggml_tensor * t, uint8_t v, size_t o, size_t s) { (void) t; (void) v; (void) o; (void) s; abort(); }
void ggml_backend_tensor_set(struct ggml_tensor * t, const void * d, size_t o, size_t s) { (void) t; (void) d; (void) o; (void) s; abort(); }

// ---- helpers ----
static void die(const char * msg) { fprintf(stderr, "driver: %s\n", msg); exit(2); }

static void * read_file(const char * path, size_t expect) {
    FILE * f = fopen(path, "rb");
    if (!f) die("cannot open input");
    void * buf = malloc(expect ? expect : 1);
    if (fread(buf, 1, expect, f) != expect) die("short input");
    fclose(f);
    return buf;
}

static void write_file(const char * path, const void * data, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f) die("cannot create output");
    if (n && fwrite(data, 1, n, f) != n) die("short write");
    fclose(f);
}

static void upper(char * dst, const char * src) {
    while (*src) { char c = *src++; *dst++ = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c; }
    *dst = 0;
}

#include "ggml-quants.h"

// ggml.c's type traits leave Q8_K's converters to the CPU backend; ggml-quants.c has both reference functions.
static ggml_from_float_t ref_of(enum ggml_type t) {
    if (t == GGML_TYPE_Q8_K) return (ggml_from_float_t) quantize_row_q8_K_ref;
    return ggml_get_type_traits(t)->from_float_ref;
}
static ggml_to_float_t deq_of(enum ggml_type t) {
    if (t == GGML_TYPE_Q8_K) return (ggml_to_float_t) dequantize_row_q8_K;
    return ggml_get_type_traits(t)->to_float;
}

static void abort_cb(const char * msg) { fprintf(stderr, "ggml abort: %s\n", msg); }

// Types ggml_quantize_chunk() dispatches on (F32 excluded: a memcpy).
static int chunk_supported(enum ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0: case GGML_TYPE_MXFP4:
        case GGML_TYPE_NVFP4: case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
        case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S:
        case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL:
        case GGML_TYPE_IQ4_XS: case GGML_TYPE_F16: case GGML_TYPE_BF16:
            return 1;
        default:
            return 0;
    }
}

// quantize_X ignores quant_weights for these (read from ggml-quants.c / ggml.c); verified at run time below.
static int ignores_imatrix(enum ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0: case GGML_TYPE_Q8_0: case GGML_TYPE_MXFP4:
        case GGML_TYPE_NVFP4: case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0: case GGML_TYPE_F16:
        case GGML_TYPE_BF16:
            return 1;
        default:
            return 0;
    }
}

static int is_block_type(enum ggml_type t) {
    const struct ggml_type_traits * tr = ggml_get_type_traits(t);
    if (tr->blck_size == 0) return 0; // removed id
    switch (t) {
        case GGML_TYPE_F32: case GGML_TYPE_I8: case GGML_TYPE_I16: case GGML_TYPE_I32:
        case GGML_TYPE_I64: case GGML_TYPE_F64:
            return 0;
        default:
            return 1;
    }
}

// Runs one variant in a forked child so that a ggml assertion only loses that entry.
// mode: 0 = from_float_ref row by row, 1 = ggml_quantize_chunk(NULL), 2 = ggml_quantize_chunk(importance)
static void run_variant(const char * outdir, const char * dataset, enum ggml_type t, int mode, const char * variant,
                        const float * x, int64_t rows, int64_t rowlen, const float * imp) {
    const struct ggml_type_traits * tr = ggml_get_type_traits(t);
    char tname[64];
    upper(tname, tr->type_name);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork failed");
    if (pid == 0) {
        ggml_set_abort_callback(abort_cb);
        const size_t row_size = ggml_row_size(t, rowlen);
        uint8_t * q = calloc(rows, row_size);
        ggml_quantize_init(t);
        if (mode == 0) {
            for (int64_t r = 0; r < rows; r++) ref_of(t)(x + r * rowlen, q + r * row_size, rowlen);
        } else {
            size_t n = ggml_quantize_chunk(t, x, q, 0, rows, rowlen, mode == 2 ? imp : NULL);
            if (n != rows * row_size) die("ggml_quantize_chunk size mismatch");
        }
        char dir[1024], bpath[1200], dpath[1200];
        snprintf(dir, sizeof dir, "%s/%s", outdir, tname);
        mkdir(dir, 0777);
        snprintf(bpath, sizeof bpath, "%s/%s.%s.bin", dir, dataset, variant);
        write_file(bpath, q, rows * row_size);
        int has_deq = deq_of(t) != NULL;
        if (has_deq) {
            float * y = calloc(rows * rowlen, sizeof(float));
            for (int64_t r = 0; r < rows; r++) deq_of(t)(q + r * row_size, y + r * rowlen, rowlen);
            snprintf(dpath, sizeof dpath, "%s/%s.%s.deq.f32", dir, dataset, variant);
            write_file(dpath, y, rows * rowlen * sizeof(float));
        }
        printf("{\"status\":\"ok\",\"type\":\"%s\",\"id\":%d,\"blockSize\":%lld,\"typeSize\":%zu,\"dataset\":\"%s\","
               "\"variant\":\"%s\",\"rows\":%lld,\"rowLength\":%lld,\"bytes\":\"%s/%s.%s.bin\",\"dequant\":%s%s%s%s%s%s%s}\n",
               tname, (int) t, (long long) tr->blck_size, tr->type_size, dataset, variant, (long long) rows,
               (long long) rowlen, tname, dataset, variant,
               has_deq ? "\"" : "null", has_deq ? tname : "", has_deq ? "/" : "", has_deq ? dataset : "",
               has_deq ? "." : "", has_deq ? variant : "", has_deq ? ".deq.f32\"" : "");
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("{\"status\":\"failed\",\"type\":\"%s\",\"id\":%d,\"dataset\":\"%s\",\"variant\":\"%s\"}\n",
               tname, (int) t, dataset, variant);
        fflush(stdout);
    }
}

struct dataset { char name[128]; int64_t rows, rowlen; float * x; float * imp; };

static int cmd_quant(int argc, char ** argv) {
    if (argc != 4) die("usage: driver quant <outdir> <datasets.txt>  (lines: name rows rowlen input.f32 importance.f32)");
    const char * outdir = argv[2];
    FILE * f = fopen(argv[3], "r");
    if (!f) die("cannot open dataset list");
    struct dataset ds[64];
    int nds = 0;
    char in[1024], ip[1024];
    long long rows, rowlen;
    while (nds < 64 && fscanf(f, "%127s %lld %lld %1023s %1023s", ds[nds].name, &rows, &rowlen, in, ip) == 5) {
        ds[nds].rows = rows;
        ds[nds].rowlen = rowlen;
        ds[nds].x = read_file(in, rows * rowlen * sizeof(float));
        ds[nds].imp = read_file(ip, rowlen * sizeof(float));
        nds++;
    }
    fclose(f);
    for (int ti = 0; ti < GGML_TYPE_COUNT; ti++) {
        enum ggml_type t = (enum ggml_type) ti;
        if (!is_block_type(t)) continue;
        const struct ggml_type_traits * tr = ggml_get_type_traits(t);
        ggml_quantize_init(t); // grids for IQ types, built once and inherited by the forked children
        for (int d = 0; d < nds; d++) {
            const char * dataset = ds[d].name;
            const int64_t rows = ds[d].rows, rowlen = ds[d].rowlen;
            const float * x = ds[d].x;
            const float * imp = ds[d].imp;
            if (rowlen % tr->blck_size) continue;
            if (ref_of(t)) run_variant(outdir, dataset, t, 0, "ref", x, rows, rowlen, imp);
            if (!chunk_supported(t)) continue;
            if (!ggml_quantize_requires_imatrix(t)) run_variant(outdir, dataset, t, 1, "noimatrix", x, rows, rowlen, imp);
            if (!ignores_imatrix(t)) {
                run_variant(outdir, dataset, t, 2, "imatrix", x, rows, rowlen, imp);
            } else {
                // confirm the claim that quant_weights is ignored: imatrix output == NULL output
                const size_t row_size = ggml_row_size(t, rowlen);
                uint8_t * a = calloc(rows, row_size);
                uint8_t * b = calloc(rows, row_size);
                ggml_quantize_chunk(t, x, a, 0, rows, rowlen, NULL);
                ggml_quantize_chunk(t, x, b, 0, rows, rowlen, imp);
                if (memcmp(a, b, rows * row_size) != 0) {
                    fprintf(stderr, "driver: %s: quantize_X output depends on quant_weights; update ignores_imatrix()\n", tr->type_name);
                    exit(3);
                }
                free(a); free(b);
            }
        }
    }
    return 0;
}

// ---- random block bytes with sane scale fields (dequantize-only test input) ----
static uint64_t rng_state;
static uint32_t rnd(void) { // xorshift64*
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (uint32_t) ((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

// an fp16 bit pattern: random sign (if allowed), exponent giving |v| in [2^-11, 2^-1), random mantissa;
// every 8th call a subnormal, to exercise that path
static uint16_t sane_half(int allow_neg) {
    static unsigned calls = 0;
    uint16_t sign = (allow_neg && (rnd() & 1)) ? 0x8000 : 0;
    uint16_t mant = rnd() & 0x3ff;
    if ((calls++ & 7) == 7) return sign | (mant ? mant : 1);
    uint16_t exp = 4 + rnd() % 10; // 4..13 -> 2^-11 .. 2^-2
    return sign | (uint16_t) (exp << 10) | mant;
}

static void put_half(uint8_t * p, uint16_t h) { memcpy(p, &h, 2); }

static void patch_block(enum ggml_type t, uint8_t * b) {
    switch (t) {
        case GGML_TYPE_Q1_0:    put_half(b + offsetof(block_q1_0, d), sane_half(1)); break;
        case GGML_TYPE_Q2_0:    put_half(b + offsetof(block_q2_0, d), sane_half(1)); break;
        case GGML_TYPE_Q4_0:    put_half(b + offsetof(block_q4_0, d), sane_half(1)); break;
        case GGML_TYPE_Q5_0:    put_half(b + offsetof(block_q5_0, d), sane_half(1)); break;
        case GGML_TYPE_Q8_0:    put_half(b + offsetof(block_q8_0, d), sane_half(1)); break;
        case GGML_TYPE_Q4_1:    put_half(b + offsetof(block_q4_1, d), sane_half(1)); put_half(b + offsetof(block_q4_1, m), sane_half(1)); break;
        case GGML_TYPE_Q5_1:    put_half(b + offsetof(block_q5_1, d), sane_half(1)); put_half(b + offsetof(block_q5_1, m), sane_half(1)); break;
        case GGML_TYPE_Q8_1:    put_half(b + offsetof(block_q8_1, d), sane_half(1)); put_half(b + offsetof(block_q8_1, s), sane_half(1)); break;
        case GGML_TYPE_Q2_K:    put_half(b + offsetof(block_q2_K, d), sane_half(1)); put_half(b + offsetof(block_q2_K, dmin), sane_half(1)); break;
        case GGML_TYPE_Q3_K:    put_half(b + offsetof(block_q3_K, d), sane_half(1)); break;
        case GGML_TYPE_Q4_K:    put_half(b + offsetof(block_q4_K, d), sane_half(1)); put_half(b + offsetof(block_q4_K, dmin), sane_half(1)); break;
        case GGML_TYPE_Q5_K:    put_half(b + offsetof(block_q5_K, d), sane_half(1)); put_half(b + offsetof(block_q5_K, dmin), sane_half(1)); break;
        case GGML_TYPE_Q6_K:    put_half(b + offsetof(block_q6_K, d), sane_half(1)); break;
        case GGML_TYPE_Q8_K: {
            float d = (float) ((rnd() & 1) ? -1 : 1) * ldexpf(1.0f + (rnd() & 0xffff) / 65536.0f, -(int) (rnd() % 12));
            memcpy(b + offsetof(block_q8_K, d), &d, 4);
        } break;
        case GGML_TYPE_TQ1_0:   put_half(b + offsetof(block_tq1_0, d), sane_half(1)); break;
        case GGML_TYPE_TQ2_0:   put_half(b + offsetof(block_tq2_0, d), sane_half(1)); break;
        case GGML_TYPE_IQ2_XXS: put_half(b + offsetof(block_iq2_xxs, d), sane_half(1)); break;
        case GGML_TYPE_IQ2_XS:  put_half(b + offsetof(block_iq2_xs, d), sane_half(1)); break;
        case GGML_TYPE_IQ2_S:   put_half(b + offsetof(block_iq2_s, d), sane_half(1)); break;
        case GGML_TYPE_IQ3_XXS: put_half(b + offsetof(block_iq3_xxs, d), sane_half(1)); break;
        case GGML_TYPE_IQ3_S:   put_half(b + offsetof(block_iq3_s, d), sane_half(1)); break;
        case GGML_TYPE_IQ1_S:   put_half(b + offsetof(block_iq1_s, d), sane_half(1)); break;
        case GGML_TYPE_IQ4_NL:  put_half(b + offsetof(block_iq4_nl, d), sane_half(1)); break;
        case GGML_TYPE_IQ4_XS:  put_half(b + offsetof(block_iq4_xs, d), sane_half(1)); break;
        case GGML_TYPE_IQ1_M: {
            // the block scale is an fp16 spread over the top nibbles of the four uint16 scale words
            uint16_t h = sane_half(1);
            uint16_t sc[4];
            memcpy(sc, b + offsetof(block_iq1_m, scales), 8);
            for (int i = 0; i < 4; i++) sc[i] = (uint16_t) ((sc[i] & 0x0fff) | (((h >> (4 * i)) & 0xf) << 12));
            memcpy(b + offsetof(block_iq1_m, scales), sc, 8);
        } break;
        case GGML_TYPE_MXFP4:   b[offsetof(block_mxfp4, e)] = (uint8_t) (117 + rnd() % 14); break; // 2^-10 .. 2^3
        case GGML_TYPE_NVFP4:
            for (int i = 0; i < QK_NVFP4 / QK_NVFP4_SUB; i++) b[offsetof(block_nvfp4, d) + i] = (uint8_t) (rnd() % 0x7f); // UE4M3, no NaN
            break;
        default: break;
    }
}

static int cmd_random(int argc, char ** argv) {
    if (argc != 5) die("usage: driver random <outdir> <nelements> <seed>");
    const char * outdir = argv[2];
    const int64_t nelements = atoll(argv[3]);
    for (int ti = 0; ti < GGML_TYPE_COUNT; ti++) {
        enum ggml_type t = (enum ggml_type) ti;
        if (!is_block_type(t)) continue;
        if (t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) continue; // raw bit patterns: NaN payloads, not block data
        const struct ggml_type_traits * tr = ggml_get_type_traits(t);
        const int64_t nblocks = nelements / tr->blck_size;
        rng_state = (uint64_t) atoll(argv[4]) * 0x9E3779B97F4A7C15ULL + (uint64_t) ti + 1;
        const size_t n = nblocks * tr->type_size;
        uint8_t * q = malloc(n);
        for (size_t i = 0; i < n; i++) q[i] = (uint8_t) rnd();
        for (int64_t i = 0; i < nblocks; i++) patch_block(t, q + i * tr->type_size);
        char tname[64], dir[1024], bpath[1200], dpath[1200];
        upper(tname, tr->type_name);
        snprintf(dir, sizeof dir, "%s/%s", outdir, tname);
        mkdir(dir, 0777);
        snprintf(bpath, sizeof bpath, "%s/random-blocks.dequant.bin", dir);
        write_file(bpath, q, n);
        const int64_t nel = nblocks * tr->blck_size;
        int has_deq = deq_of(t) != NULL;
        if (has_deq) {
            float * y = calloc(nel, sizeof(float));
            deq_of(t)(q, y, nel);
            snprintf(dpath, sizeof dpath, "%s/random-blocks.dequant.deq.f32", dir);
            write_file(dpath, y, nel * sizeof(float));
            free(y);
        }
        printf("{\"status\":\"ok\",\"type\":\"%s\",\"id\":%d,\"blockSize\":%lld,\"typeSize\":%zu,\"dataset\":\"random-blocks\","
               "\"variant\":\"dequant\",\"rows\":1,\"rowLength\":%lld,\"bytes\":\"%s/random-blocks.dequant.bin\",\"dequant\":%s%s%s}\n",
               tname, ti, (long long) tr->blck_size, tr->type_size, (long long) nel, tname,
               has_deq ? "\"" : "null", has_deq ? tname : "", has_deq ? "/random-blocks.dequant.deq.f32\"" : "");
        free(q);
    }
    return 0;
}

// ---- type table dump for cross-checking src/quant/ggml/types.ts ----
static int cmd_types(void) {
    for (int ti = 0; ti < GGML_TYPE_COUNT; ti++) {
        const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) ti);
        if (tr->blck_size == 0) continue;
        char tname[64];
        upper(tname, tr->type_name);
        printf("{\"id\":%d,\"name\":\"%s\",\"blockSize\":%lld,\"typeSize\":%zu,\"hasRef\":%s,\"hasDequant\":%s}\n", ti, tname,
               (long long) tr->blck_size, tr->type_size, ref_of((enum ggml_type) ti) ? "true" : "false", deq_of((enum ggml_type) ti) ? "true" : "false");
    }
    return 0;
}

int main(int argc, char ** argv) {
    if (argc >= 2 && !strcmp(argv[1], "quant")) return cmd_quant(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "random")) return cmd_random(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "types")) return cmd_types();
    die("usage: driver quant|random|types ...");
    return 2;
}
