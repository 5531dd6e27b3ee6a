/*
 * fixture.h - the fixture reader shared by the five fake vendor libraries (fake_nvml.c, fake_dcmi.c,
 * fake_cndev.c, fake_xpuml.c, fake_stcml.c).
 *
 * A fixture is a text file of "key=value" lines; a line starting with '#' is a comment. When a key appears
 * twice the LAST line wins, so appending a line also works. The file is named by the environment variable
 * FX_ENV, which each fake defines before including this header, and is re-read on every call: a test changes
 * a device's state between two calls by rewriting the file (atomically: write a temporary file, then rename;
 * tests/unit/backends/fakelib.py's Fixture does that).
 *
 * Keys every fake understands:
 *   init_error=<code>            the init function returns <code>
 *   count=<n>                    number of devices (0 to FX_MAX_DEVICES)
 *   driver_version=<text>        the driver version the library reports
 *   dev<i>.<field>=<value>       a value of device i (each fake lists its fields at its top)
 *   dev<i>.fail=<code>           every per-device function of device i returns <code>
 *   fail.<function>=<code>       every call of <function> returns <code>
 *   fail.<function>.<i>=<code>   ... only for device i
 *   hang.<function>=<seconds>    every call of <function> sleeps first (also hang.<function>.<i>)
 * Each fake leaves an exported function out when built with -DOMIT_<function> (missing-symbol tests).
 *
 * Everything here is static inline and keeps no state, so it is thread-safe, and the fakes' exported
 * functions never call each other (with RTLD_GLOBAL another build's symbol could be picked).
 */
#ifndef KRAKENPLUG_FIXTURE_H
#define KRAKENPLUG_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FX_ENV
#error "define FX_ENV (the environment variable naming the fixture file) before including fixture.h"
#endif

#define FX_LINE 1024
#define FX_MAX_DEVICES 64

static inline FILE *fx_open(void) {
    const char *path = getenv(FX_ENV);
    return path ? fopen(path, "r") : NULL;
}

/* Copies src into a fixed-size field, cutting it short when it does not fit. */
static inline void fx_copy(char *dst, size_t size, const char *src) {
    if (size == 0) return;
    strncpy(dst, src, size - 1);
    dst[size - 1] = '\0';
}

/* Copies src into a caller's buffer of length n; 0 on success, -1 when it does not fit (the caller then
 * answers with its library's "insufficient size" code). */
static inline int fx_copy_out(char *dst, unsigned n, const char *src) {
    if (dst == NULL || strlen(src) + 1 > n) return -1;
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

/* Copies the value of the last "key=" line into out; returns 1 when the key is present. */
static inline int fx_lookup(const char *key, char *out, size_t size) {
    FILE *file = fx_open();
    if (!file) return 0;
    char line[FX_LINE];
    size_t length = strlen(key);
    int found = 0;
    while (fgets(line, sizeof line, file)) {
        if (line[0] == '#' || strncmp(line, key, length) != 0 || line[length] != '=') continue;
        char *value = line + length + 1;
        value[strcspn(value, "\r\n")] = '\0';
        fx_copy(out, size, value);
        found = 1;
    }
    fclose(file);
    return found;
}

static inline long long fx_int(const char *key, long long fallback) {
    char value[FX_LINE];
    return fx_lookup(key, value, sizeof value) ? strtoll(value, NULL, 0) : fallback;
}

static inline double fx_num(const char *key, double fallback) {
    char value[FX_LINE];
    return fx_lookup(key, value, sizeof value) ? strtod(value, NULL) : fallback;
}

/* A text value; 0 (and out = fallback) when the key is absent. */
static inline int fx_str(const char *key, char *out, size_t size, const char *fallback) {
    if (fx_lookup(key, out, size)) return 1;
    fx_copy(out, size, fallback);
    return 0;
}

static inline const char *fx_devkey(char *buffer, size_t size, int dev, const char *field) {
    snprintf(buffer, size, "dev%d.%s", dev, field);
    return buffer;
}

static inline long long fx_dev_int(int dev, const char *field, long long fallback) {
    char key[128];
    return fx_int(fx_devkey(key, sizeof key, dev, field), fallback);
}

static inline double fx_dev_num(int dev, const char *field, double fallback) {
    char key[128];
    return fx_num(fx_devkey(key, sizeof key, dev, field), fallback);
}

static inline int fx_dev_str(int dev, const char *field, char *out, size_t size, const char *fallback) {
    char key[128];
    return fx_str(fx_devkey(key, sizeof key, dev, field), out, size, fallback);
}

/* "count", kept within 0..FX_MAX_DEVICES so it can index the fakes' handle arrays. */
static inline int fx_count(void) {
    long long count = fx_int("count", 0);
    return count < 0 ? 0 : (count > FX_MAX_DEVICES ? FX_MAX_DEVICES : (int)count);
}

/* A PCI address dddd:bb:dd.f. */
struct fx_pci {
    unsigned domain, bus, slot, function;
};

/* Parses text as a PCI address; 1 when it is one. */
static inline int fx_parse_pci(const char *text, struct fx_pci *pci) {
    return sscanf(text, "%x:%x:%x.%x", &pci->domain, &pci->bus, &pci->slot, &pci->function) == 4;
}

static inline int fx_pci_equal(const struct fx_pci *left, const struct fx_pci *right) {
    return left->domain == right->domain && left->bus == right->bus && left->slot == right->slot &&
           left->function == right->function;
}

/* dev<i>.bus_id, by default 0000:<default_bus>:00.0; 1 when it parses. */
static inline int fx_dev_pci(int dev, unsigned default_bus, struct fx_pci *pci) {
    char fallback[32], value[64];
    snprintf(fallback, sizeof fallback, "0000:%02x:00.0", default_bus);
    fx_dev_str(dev, "bus_id", value, sizeof value, fallback);
    return fx_parse_pci(value, pci);
}

static inline void fx_sleep(double seconds) {
    struct timespec pause = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&pause, &pause) != 0) {
    }
}

static inline double fx_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* The injected fault for one call: sleeps when asked to hang, then returns the code to fail with (0: none).
 * dev < 0 means a call that is not about one device. */
static inline int fx_fault(const char *function, int dev) {
    char key[256];
    double hang = 0;
    if (dev >= 0) {
        snprintf(key, sizeof key, "hang.%s.%d", function, dev);
        hang = fx_num(key, 0);
    }
    if (hang <= 0) {
        snprintf(key, sizeof key, "hang.%s", function);
        hang = fx_num(key, 0);
    }
    if (hang > 0) fx_sleep(hang);
    long long code = 0;
    if (dev >= 0) {
        snprintf(key, sizeof key, "fail.%s.%d", function, dev);
        code = fx_int(key, 0);
        if (code == 0) code = fx_dev_int(dev, "fail", 0);
    }
    if (code == 0) {
        snprintf(key, sizeof key, "fail.%s", function);
        code = fx_int(key, 0);
    }
    return (int)code;
}

/* What the library's init function returns: an injected fault, else init_error (0: success). */
static inline int fx_init_result(const char *function) {
    int fault = fx_fault(function, -1);
    return fault ? fault : (int)fx_int("init_error", 0);
}

#endif
