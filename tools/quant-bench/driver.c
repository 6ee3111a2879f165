// Quantizer benchmark driver for `npm run bench -- schemes` (bench/schemes.ts): times llama.cpp's own
// reference quantizers (the from_float_ref type trait = quantize_row_X_ref in ggml-quants.c) on a
// float32 file, single-threaded, and writes the bytes so that the bench can compare them with lowbit's.
// Built by bench/schemes.ts from .cache/llama.cpp-src (llama.cpp's code is never committed here).
//
// Usage: driver <input.f32> <count> <reps> <outdir> TYPE...
//   For each TYPE (e.g. q4_K): quantizes the first <count> floats <reps> times, writes <outdir>/TYPE.bin,
//   prints {"type": "TYPE", "seconds": best wall-clock, "cpu": best process CPU time, "bytes": n} on one line.

#include "ggml.h"
#include "ggml-backend.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

// ---- stubs for symbols ggml.c references but the quantizers never reach ----
void ggml_critical_section_start(void) {}
void ggml_critical_section_end(void) {}
enum ggml_backend_buffer_usage ggml_backend_buffer_get_usage(ggml_backend_buffer_t b) { (void) b; abort(); }
void ggml_backend_tensor_memset(struct ggml_tensor * t, uint8_t v, size_t o, size_t s) { (void) t; (void) v; (void) o; (void) s; abort(); }
void ggml_backend_tensor_set(struct ggml_tensor * t, const void * d, size_t o, size_t s) { (void) t; (void) d; (void) o; (void) s; abort(); }

static void die(const char * msg) { fprintf(stderr, "driver: %s\n", msg); exit(2); }

static double clock_s(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int type_by_name(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) t);
        if (tr->type_name && strcasecmp(tr->type_name, name) == 0 && tr->from_float_ref) return t;
    }
    return -1;
}

int main(int argc, char ** argv) {
    if (argc < 6) die("usage: driver <input.f32> <count> <reps> <outdir> TYPE...");
    const int64_t n = atoll(argv[2]);
    const int reps = atoi(argv[3]);
    float * x = malloc(n * sizeof(float));
    FILE * f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof(float), n, f) != (size_t) n) die("cannot read input");
    fclose(f);
    for (int a = 5; a < argc; a++) {
        const int t = type_by_name(argv[a]);
        if (t < 0) die("unknown type");
        const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) t);
        if (n % tr->blck_size) die("count is not a multiple of the block size");
        const size_t bytes = (size_t) (n / tr->blck_size) * tr->type_size;
        uint8_t * y = malloc(bytes);
        double best = 1e30, best_cpu = 1e30;
        for (int r = 0; r < reps; r++) {
            const double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
            tr->from_float_ref(x, y, n);
            const double dt = clock_s(CLOCK_MONOTONIC) - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
            if (dt < best) best = dt;
            if (dc < best_cpu) best_cpu = dc;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", argv[4], argv[a]);
        FILE * o = fopen(path, "wb");
        if (!o || fwrite(y, 1, bytes, o) != bytes) die("cannot write output");
        fclose(o);
        printf("{\"type\":\"%s\",\"seconds\":%.6f,\"cpu\":%.6f,\"bytes\":%zu}\n", argv[a], best, best_cpu, bytes);
        fflush(stdout);
        free(y);
    }
    free(x);
    return 0;
}
