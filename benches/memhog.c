/* memhog SIZE_MIB KIND [OUTFILE]
 *
 * Touches SIZE_MIB MiB of anonymous memory filled with KIND data:
 *   random  xorshift bytes (incompressible)
 *   zeros   zero bytes, but every page written (present in memory)
 *   mixed   per 4 MiB block: 1/2 random, 1/4 text, 1/4 zeros
 * prints "READY sum=<checksum> addr=<address> len=<bytes>", then idles. On
 * SIGUSR1 it recomputes the checksum and prints "sum=<checksum> gap_us=<gap>",
 * so a benchmark can verify that a restored copy holds exactly the same bytes.
 *
 * The freeze as the process sees it: the idle loop sleeps 1 ms at a time and
 * keeps the longest gap between two of its CLOCK_MONOTONIC readings. A dump
 * that stops the process shows up as one long gap. The gaps are reported in
 * microseconds and then reset: with the checksum on SIGUSR1 (measured before
 * the checksum is computed), alone on SIGUSR2 as "gap_us=<gap>
 * wall_gap_us=<gap>". An idle process reports a little over 1000.
 *
 * wall_gap_us is the same from CLOCK_REALTIME readings: a restored copy
 * carries its last reading over, so its first gap spans dump, kill and
 * restore. CLOCK_MONOTONIC cannot show that for every tool: CRIU restores
 * into a new time namespace whose monotonic clock goes on from the value it
 * had at the dump.
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
#include <time.h>
#include <unistd.h>

static uint8_t *mem;
static size_t len;
static volatile sig_atomic_t want_sum, want_gap;
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
static void on_usr2(int sig) { (void)sig; want_gap = 1; }

static uint64_t now_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

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
    signal(SIGUSR2, on_usr2);
    dprintf(out_fd, "READY sum=%016llx addr=%#llx len=%llu\n", (unsigned long long)checksum(),
            (unsigned long long)(uintptr_t)mem, (unsigned long long)len);
    uint64_t last = now_ns(CLOCK_MONOTONIC), max_gap = 0;
    uint64_t wall_last = now_ns(CLOCK_REALTIME), wall_max = 0;
    for (;;) {
        usleep(1000);
        uint64_t t = now_ns(CLOCK_MONOTONIC), w = now_ns(CLOCK_REALTIME);
        if (t - last > max_gap) max_gap = t - last;
        /* signed: the wall clock may be set back */
        if ((int64_t)(w - wall_last) > (int64_t)wall_max) wall_max = w - wall_last;
        last = t;
        wall_last = w;
        if (want_gap) {
            want_gap = 0;
            dprintf(out_fd, "gap_us=%llu wall_gap_us=%llu\n", (unsigned long long)(max_gap / 1000),
                    (unsigned long long)(wall_max / 1000));
            max_gap = wall_max = 0;
        }
        if (want_sum) {
            want_sum = 0;
            uint64_t gap = max_gap, wall_gap = wall_max;
            dprintf(out_fd, "sum=%016llx gap_us=%llu wall_gap_us=%llu\n",
                    (unsigned long long)checksum(), (unsigned long long)(gap / 1000),
                    (unsigned long long)(wall_gap / 1000));
            /* the checksum's own time is not a freeze */
            max_gap = wall_max = 0;
            last = now_ns(CLOCK_MONOTONIC);
            wall_last = now_ns(CLOCK_REALTIME);
        }
    }
}
