/* Used by the restore and e2e pipe tests. Prints tick=N every 10 ms on
 * stdout; on SIGUSR1 reads what stdin has (without blocking) and prints
 * got=LINE for each line, then "drained". */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t want;
static void on_usr1(int s) { (void)s; want = 1; }
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    printf("READY pid=%d\n", getpid());
    char line[4096];
    size_t have = 0;
    for (long n = 0;; n++) {
        if (want) {
            want = 0;
            struct pollfd p = {0, POLLIN, 0};
            while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
                ssize_t k = read(0, line + have, sizeof line - have);
                if (k <= 0) break;
                have += (size_t)k;
                char *nl;
                while ((nl = memchr(line, '\n', have))) {
                    *nl = 0;
                    printf("got=%s\n", line);
                    have -= (size_t)(nl + 1 - line);
                    memmove(line, nl + 1, have);
                }
            }
            printf("drained\n");
        }
        printf("tick=%ld\n", n);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
