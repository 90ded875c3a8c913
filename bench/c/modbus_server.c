/* Minimal libmodbus Modbus/TCP server: the C baseline of bench/modbus_vs_c.py.
 *
 * Serves holding (FC3) and input (FC4) registers from START for as many registers as the image
 * file holds (big-endian 16-bit words, the gateway's SunSpec bank image), to any number of
 * clients, in one thread with select() -- the pattern of libmodbus's own multi-client example
 * (tests/bandwidth-server-many-up.c). Prints "ready <port>" once listening; runs until killed.
 *
 * Usage: modbus_server <port> <start address> <image file>
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s port start image\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), start = atoi(argv[2]);
    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror("image"); return 2; }
    unsigned char buf[2 * 65536];
    size_t n = fread(buf, 1, sizeof buf, f) / 2;
    fclose(f);
    modbus_mapping_t *map = modbus_mapping_new_start_address(0, 0, 0, 0, start, n, start, n);
    if (!map) { fprintf(stderr, "mapping: %s\n", modbus_strerror(errno)); return 1; }
    for (size_t i = 0; i < n; i++) {
        map->tab_registers[i] = map->tab_input_registers[i] = (uint16_t)(buf[2 * i] << 8 | buf[2 * i + 1]);
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    int server = modbus_tcp_listen(ctx, 64);
    if (server < 0) { fprintf(stderr, "listen: %s\n", modbus_strerror(errno)); return 1; }
    printf("ready %d\n", port);
    fflush(stdout);
    fd_set all;
    FD_ZERO(&all);
    FD_SET(server, &all);
    int maxfd = server;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        fd_set ready = all;
        if (select(maxfd + 1, &ready, NULL, NULL, NULL) < 0) { perror("select"); return 1; }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (!FD_ISSET(fd, &ready)) continue;
            if (fd == server) {
                int client = modbus_tcp_accept(ctx, &server);
                if (client >= 0) {
                    FD_SET(client, &all);
                    if (client > maxfd) maxfd = client;
                }
                continue;
            }
            modbus_set_socket(ctx, fd);
            int rc = modbus_receive(ctx, query);
            if (rc > 0) {
                modbus_reply(ctx, query, rc, map);
            } else if (rc == -1) {
                close(fd);
                FD_CLR(fd, &all);
                if (fd == maxfd) while (maxfd > server && !FD_ISSET(maxfd, &all)) maxfd--;
            }
        }
    }
}
