/* proctree N OUTFILE
 *
 * A tree of N small processes for the dump/restore benchmark: this process
 * (the parent) forks N-1 children, and every one of them sleeps in a loop
 * (100 ms at a time). When all children exist the parent writes
 * "READY pids=<parent>,<child>,...,<child>" to OUTFILE (opened O_APPEND,
 * one write(2)), then sleeps in its own loop. The children close OUTFILE
 * before they loop, so each holds only the standard descriptors inherited
 * from the parent. stdout/stderr are expected on /dev/null.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_forever(void)
{
    const struct timespec t = {0, 100 * 1000 * 1000};
    for (;;)
        nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: proctree N OUTFILE\n");
        return 2;
    }
    int n = atoi(argv[1]);
    if (n < 1 || n > 10000) {
        fprintf(stderr, "proctree: N must be 1..10000\n");
        return 2;
    }
    int out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (out < 0) {
        perror(argv[2]);
        return 1;
    }
    size_t cap = 32 + (size_t)n * 12;
    char *line = malloc(cap);
    if (!line) return 1;
    int len = snprintf(line, cap, "READY pids=%d", (int)getpid());
    for (int i = 1; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0) {
            close(out);
            free(line);
            sleep_forever();
        }
        len += snprintf(line + len, cap - (size_t)len, ",%d", (int)p);
    }
    line[len++] = '\n';
    if (write(out, line, (size_t)len) != len) return 1;
    free(line);
    sleep_forever();
}
