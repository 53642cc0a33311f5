/* An LD_PRELOAD shim that injects storage faults into `keyward serve` for tests/faults.rs.
 *
 * While the file $KEYWARD_FAULT_DIR/enospc exists, writes to the SQLite database and its log
 * (a path ending in "keyward.db" or "keyward.db-wal") fail with ENOSPC; while
 * $KEYWARD_FAULT_DIR/eio-sync exists, fsync and fdatasync of those files fail with EIO. Nothing
 * else changes, so a test turns a fault on and off by creating and removing a file, with the
 * server running. Built by the test with the system C compiler. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int fault_on(const char *name) {
    const char *dir = getenv("KEYWARD_FAULT_DIR");
    char path[PATH_MAX];
    if (!dir) return 0;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static int is_store_file(int fd) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    size_t len = (size_t)n;
    const char *db = "keyward.db", *wal = "keyward.db-wal";
    return (len >= strlen(db) && strcmp(path + len - strlen(db), db) == 0) ||
           (len >= strlen(wal) && strcmp(path + len - strlen(wal), wal) == 0);
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);

/* The next definition of `name` (libc's), looked up once. */
#define REAL(type, name) static type real_##name; \
    if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write_fn, write);
    if (fault_on("enospc") && is_store_file(fd)) { errno = ENOSPC; return -1; }
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite_fn, pwrite);
    if (fault_on("enospc") && is_store_file(fd)) { errno = ENOSPC; return -1; }
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite_fn, pwrite64);
    if (fault_on("enospc") && is_store_file(fd)) { errno = ENOSPC; return -1; }
    return real_pwrite64(fd, buf, count, offset);
}

int fsync(int fd) {
    REAL(sync_fn, fsync);
    if (fault_on("eio-sync") && is_store_file(fd)) { errno = EIO; return -1; }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(sync_fn, fdatasync);
    if (fault_on("eio-sync") && is_store_file(fd)) { errno = EIO; return -1; }
    return real_fdatasync(fd);
}
