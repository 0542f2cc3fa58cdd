/* memhog SIZE_MIB KIND [OUTFILE]
 *
 * Touches SIZE_MIB MiB of anonymous memory filled with KIND data:
 *   random  xorshift bytes (incompressible)
 *   zeros   zero bytes, but every page written (present in memory)
 *   mixed   per 4 MiB block: 1/2 random, 1/4 text, 1/4 zeros
 * prints "READY sum=<checksum> addr=<address> len=<bytes>", then idles. On
 * SIGUSR1 it recomputes the checksum and prints "sum=<checksum>", so a
 * benchmark can verify that a restored copy holds exactly the same bytes.
 *
 * The lines go to OUTFILE when given (opened O_APPEND, written with one
 * write(2) per line, so nothing is buffered in the process), else to
 * stdout. With OUTFILE the benchmark can leave stdout/stderr on /dev/null:
 * a restored copy writes its lines to the same file, whatever restore does
 * with its standard descriptors.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *mem;
static size_t len;
static volatile sig_atomic_t want_sum;
static int out_fd = 1;

static uint64_t checksum(void)
{
    uint64_t h = 1469598103934665603ULL;
    const uint64_t *p = (const uint64_t *)mem;
    for (size_t i = 0; i < len / 8; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void fill_random(uint8_t *p, size_t n, uint64_t *s)
{
    uint64_t x = *s;
    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    *s = x;
}

static void fill_text(uint8_t *p, size_t n, uint64_t *s)
{
    static const char *words[] = {"checkpoint ", "restore ", "process ", "memory ", "page ",
                                  "frame ", "thread ", "signal ", "the ", "of ", "and ", "\n"};
    uint64_t x = *s;
    size_t i = 0;
    while (i < n) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        const char *w = words[x % 12];
        size_t l = strlen(w);
        if (l > n - i) l = n - i;
        memcpy(p + i, w, l);
        i += l;
    }
    *s = x;
}

static void on_usr1(int sig) { (void)sig; want_sum = 1; }

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: memhog SIZE_MIB random|zeros|mixed [OUTFILE]\n");
        return 2;
    }
    if (argc == 4) {
        out_fd = open(argv[3], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (out_fd < 0) { perror(argv[3]); return 1; }
    }
    len = (size_t)atol(argv[1]) << 20;
    const char *kind = argv[2];
    mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    const size_t block = 4 << 20;
    for (size_t off = 0; off < len; off += block) {
        size_t n = len - off < block ? len - off : block;
        uint8_t *p = mem + off;
        if (!strcmp(kind, "random")) {
            fill_random(p, n, &s);
        } else if (!strcmp(kind, "zeros")) {
            for (size_t i = 0; i < n; i += 4096) p[i] = 1, p[i] = 0;
        } else {
            size_t h = n / 2, q = n / 4;
            fill_random(p, h, &s);
            fill_text(p + h, q, &s);
            for (size_t i = h + q; i < n; i += 4096) p[i] = 1, p[i] = 0;
        }
    }
    signal(SIGUSR1, on_usr1);
    dprintf(out_fd, "READY sum=%016llx addr=%#llx len=%llu\n", (unsigned long long)checksum(),
            (unsigned long long)(uintptr_t)mem, (unsigned long long)len);
    for (;;) {
        if (want_sum) {
            want_sum = 0;
            dprintf(out_fd, "sum=%016llx\n", (unsigned long long)checksum());
        }
        usleep(2000);
    }
}
