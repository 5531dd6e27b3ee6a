/*
 * fixture_b.h - fixture reading for fake_xpuml.c and fake_stcml.c (Kunlunxin and StreamComputing fakes).
 *
 * The fixture is a plain text file, one "key=value" per line; lines starting with '#' are ignored and the
 * first line with a key wins. The including file defines FX_ENV, the environment variable that names the
 * file. The file is opened on every call, so a test flips a device's state by rewriting it (atomically:
 * write a temporary file and rename it over the old one).
 *
 * Keys both fakes understand:
 *   init_error=<code>               the init function returns <code>
 *   count=<n>                       how many devices the library reports
 *   dev.<i>.<field>=<value>         a value of device i (each fake lists its fields at its top)
 *   error.<function>=<code>         <function> returns <code> (for every device)
 *   error.<function>.<i>=<code>     <function> returns <code> for device i only
 *   hang.<function>=<seconds>       <function> sleeps that long before answering (also .<i>)
 *
 * Only static inline functions: the fakes' exported symbols never call one another, so two builds of the same
 * fake loaded into one process with RTLD_GLOBAL cannot pick each other's code.
 */
#ifndef KRAKENPLUG_FIXTURE_B_H
#define KRAKENPLUG_FIXTURE_B_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FX_ENV
#error "define FX_ENV before including fixture_b.h"
#endif

#define FXB_LINE 512

/* Copies the value of "key" into out (always NUL-terminated); 1 when found. */
static inline int fxb_get(const char *key, char *out, size_t size) {
    const char *path = getenv(FX_ENV);
    FILE *file = path ? fopen(path, "r") : NULL;
    if (!file) return 0;
    char line[FXB_LINE];
    size_t key_length = strlen(key);
    int found = 0;
    while (!found && fgets(line, sizeof line, file)) {
        if (line[0] == '#' || strncmp(line, key, key_length) != 0 || line[key_length] != '=') continue;
        char *value = line + key_length + 1;
        value[strcspn(value, "\r\n")] = '\0';
        snprintf(out, size, "%s", value);
        found = 1;
    }
    fclose(file);
    return found;
}

static inline long long fxb_int(const char *key, long long fallback) {
    char value[FXB_LINE];
    return fxb_get(key, value, sizeof value) ? strtoll(value, NULL, 0) : fallback;
}

static inline double fxb_num(const char *key, double fallback) {
    char value[FXB_LINE];
    return fxb_get(key, value, sizeof value) ? strtod(value, NULL) : fallback;
}

static inline const char *fxb_dev_key(char *buffer, size_t size, int dev, const char *field) {
    snprintf(buffer, size, "dev.%d.%s", dev, field);
    return buffer;
}

static inline long long fxb_dev_int(int dev, const char *field, long long fallback) {
    char key[128];
    return fxb_int(fxb_dev_key(key, sizeof key, dev, field), fallback);
}

static inline double fxb_dev_num(int dev, const char *field, double fallback) {
    char key[128];
    return fxb_num(fxb_dev_key(key, sizeof key, dev, field), fallback);
}

/* Device string field; 0 (and out = fallback) when absent. */
static inline int fxb_dev_str(int dev, const char *field, char *out, size_t size, const char *fallback) {
    char key[128];
    if (fxb_get(fxb_dev_key(key, sizeof key, dev, field), out, size)) return 1;
    snprintf(out, size, "%s", fallback);
    return 0;
}

static inline void fxb_sleep(double seconds) {
    struct timespec pause;
    pause.tv_sec = (time_t)seconds;
    pause.tv_nsec = (long)((seconds - (double)pause.tv_sec) * 1e9);
    while (nanosleep(&pause, &pause) != 0) {
    }
}

/* Applies the injected faults of one call: sleeps for hang.*, then returns the error code (0: none).
 * dev < 0 is a call that concerns no single device. */
static inline int fxb_fault(const char *function, int dev) {
    char key[192];
    double hang = 0;
    long long code = 0;
    if (dev >= 0) {
        snprintf(key, sizeof key, "hang.%s.%d", function, dev);
        hang = fxb_num(key, 0);
    }
    if (hang <= 0) {
        snprintf(key, sizeof key, "hang.%s", function);
        hang = fxb_num(key, 0);
    }
    if (hang > 0) fxb_sleep(hang);
    if (dev >= 0) {
        snprintf(key, sizeof key, "error.%s.%d", function, dev);
        code = fxb_int(key, 0);
    }
    if (code == 0) {
        snprintf(key, sizeof key, "error.%s", function);
        code = fxb_int(key, 0);
    }
    return (int)code;
}

/* Copies src into a caller buffer of length n; 0 on success, -1 when it does not fit. */
static inline int fxb_copy_out(char *dst, unsigned n, const char *src) {
    if (dst == NULL || strlen(src) + 1 > n) return -1;
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

#endif
