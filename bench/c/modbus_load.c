/* Multi-client Modbus/TCP load generator: the same client for every server in bench/modbus_vs_c.py.
 *
 * N threads, one connection each, one outstanding request: FC3 reads of COUNT registers at
 * ADDRESS back to back for SECONDS. Every answer is checked (transaction id, function, byte count,
 * first four bytes "SunS"); a wrong answer stops the run with exit code 1. Prints one line:
 * "requests <total> seconds <elapsed> rps <rate> p50_us <median latency> p99_us <p99 latency>".
 *
 * Usage: modbus_load <port> <clients> <seconds> [address=40000] [count=125]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000
static int port, address = 40000, count = 125;
static double seconds;
static unsigned *latencies; /* microseconds, shared by all threads */
static long samples;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int failed;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int read_all(int fd, uint8_t *p, int n) {
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) return -1;
        p += r;
        n -= r;
    }
    return 0;
}

static void *client(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("connect"); failed = 1; return NULL; }
    enum { LOCAL = 1 << 20 };
    unsigned *local = malloc(sizeof(unsigned) * LOCAL);
    long n = 0;
    uint8_t req[12] = {0, 0, 0, 0, 0, 6, 1, 3, address >> 8, address & 0xFF, count >> 8, count & 0xFF};
    uint8_t ans[9 + 250];
    int answer_len = 9 + 2 * count;
    uint16_t tid = 0;
    double end = now() + seconds;
    for (;;) {
        double t0 = now();
        if (t0 >= end || failed) break;
        tid++;
        req[0] = tid >> 8;
        req[1] = tid & 0xFF;
        if (send(fd, req, sizeof req, 0) != sizeof req || read_all(fd, ans, answer_len) < 0) {
            fprintf(stderr, "connection lost\n");
            failed = 1;
            break;
        }
        if (ans[0] != (tid >> 8) || ans[1] != (tid & 0xFF) || ans[7] != 3 || ans[8] != 2 * count ||
            memcmp(ans + 9, "SunS", 4) != 0) {
            fprintf(stderr, "unexpected answer\n");
            failed = 1;
            break;
        }
        if (n < LOCAL) local[n] = (unsigned)((now() - t0) * 1e6);
        n++;
    }
    close(fd);
    long kept = n < LOCAL ? n : LOCAL;
    pthread_mutex_lock(&lock);
    for (long i = 0; i < kept && samples < MAX_SAMPLES; i++) latencies[samples++] = local[i];
    pthread_mutex_unlock(&lock);
    free(local);
    return (void *)n;
}

static int cmp(const void *a, const void *b) {
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s port clients seconds [address] [count]\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    int clients = atoi(argv[2]);
    seconds = atof(argv[3]);
    if (argc > 4) address = atoi(argv[4]);
    if (argc > 5) count = atoi(argv[5]);
    if (clients < 1 || clients > 64 || count < 2 || count > 125) { fprintf(stderr, "bad arguments\n"); return 2; }
    latencies = malloc(sizeof(unsigned) * MAX_SAMPLES);
    pthread_t threads[64];
    double t0 = now();
    for (int i = 0; i < clients; i++) pthread_create(&threads[i], NULL, client, NULL);
    long total = 0;
    for (int i = 0; i < clients; i++) {
        void *n;
        pthread_join(threads[i], &n);
        total += (long)n;
    }
    double elapsed = now() - t0;
    if (failed) return 1;
    qsort(latencies, samples, sizeof(unsigned), cmp);
    unsigned p50 = samples ? latencies[samples / 2] : 0, p99 = samples ? latencies[samples * 99 / 100] : 0;
    printf("requests %ld seconds %.3f rps %.0f p50_us %u p99_us %u\n", total, elapsed, total / elapsed, p50, p99);
    return 0;
}
