/*
 * A simulated libnvidia-ml.so.1 for tests and benchmarks.
 *
 * Built against NVIDIA's own nvml.h (PyPI wheel nvidia-nvml-dev), so every
 * struct layout is the driver's. Driven by a trace that the Python simulator
 * exports (gpu_carbon_exporter.sim.trace): the same power patterns, evaluated
 * with the same closed forms, so energy agrees with the Python GroundTruth.
 *
 * Environment:
 *   NVML_SIM_TRACE        trace file (required; nvmlInit fails without it)
 *   NVML_SIM_LOST         comma-separated device indices answering GPU_IS_LOST
 *   NVML_SIM_UNSUPPORTED  comma-separated index:function pairs answering NOT_SUPPORTED
 *   NVML_SIM_INIT_ERROR   an nvmlReturn_t that nvmlInit returns
 *   NVML_SIM_COUNTS       file to which call counts are written (at most once a second, and at exit)
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvml.h"

#define MAX_DEV 1024
#define MAX_PROC 8192
#define MAX_MIG 7
#define EXPORT __attribute__((visibility("default")))

/* ---- power patterns: closed-form energy, as in sim/patterns.py ---------- */
enum { P_CONST, P_PWC, P_PWL, P_SQ, P_PER, P_SCH };
typedef struct pat {
    int kind, n;
    double a[5];             /* CONST: w; SQ: period duty high low phase; PER: period */
    double *t, *v, *cum;     /* PWC/PWL points; SCH starts in t */
    struct pat **parts;      /* SCH segments; PER inner in parts[0] */
    double per_period;
} pat;

static double p_energy(const pat *p, double t);

static int seg_index(const double *t, int n, double x) {
    int lo = 0, hi = n - 1;  /* last i with t[i] <= x, at least 0 */
    if (x < t[0]) return 0;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (t[mid] <= x) lo = mid; else hi = mid - 1;
    }
    return lo;
}

static double sq_raw(const pat *p, double u) {
    double per = p->a[0], on = p->a[1] * per, n = floor(u / per), rem = u - n * per;
    double whole = (p->a[2] * p->a[1] + p->a[3] * (1 - p->a[1])) * per;
    return n * whole + p->a[2] * fmin(rem, on) + p->a[3] * fmax(rem - on, 0.0);
}

static double p_power(const pat *p, double t) {
    int i;
    switch (p->kind) {
    case P_CONST: return p->a[0];
    case P_PWC: return p->v[seg_index(p->t, p->n, t)];
    case P_PWL:
        i = seg_index(p->t, p->n, t);
        if (i >= p->n - 1) return p->v[p->n - 1];
        return p->v[i] + (t - p->t[i]) / (p->t[i + 1] - p->t[i]) * (p->v[i + 1] - p->v[i]);
    case P_SQ: {
        double rem = fmod(t + p->a[4], p->a[0]);
        return rem < p->a[1] * p->a[0] ? p->a[2] : p->a[3];
    }
    case P_PER: return p_power(p->parts[0], fmod(t, p->a[0]));
    case P_SCH:
        i = seg_index(p->t, p->n, t);
        return p_power(p->parts[i], t - p->t[i]);
    }
    return 0;
}

static double p_energy(const pat *p, double t) {
    int i;
    if (t <= 0) return 0;
    switch (p->kind) {
    case P_CONST: return p->a[0] * t;
    case P_PWC:
        i = seg_index(p->t, p->n, t);
        return p->cum[i] + p->v[i] * (t - p->t[i]);
    case P_PWL:
        i = seg_index(p->t, p->n, t);
        if (i >= p->n - 1) return p->cum[p->n - 1] + p->v[p->n - 1] * (t - p->t[p->n - 1]);
        return p->cum[i] + 0.5 * (p->v[i] + p_power(p, t)) * (t - p->t[i]);
    case P_SQ: return sq_raw(p, t + p->a[4]) - sq_raw(p, p->a[4]);
    case P_PER: {
        double n = floor(t / p->a[0]);
        return n * p->per_period + p_energy(p->parts[0], t - n * p->a[0]);
    }
    case P_SCH:
        i = seg_index(p->t, p->n, t);
        return p->cum[i] + p_energy(p->parts[i], t - p->t[i]);
    }
    return 0;
}

static char *next_tok(char **save) { return strtok_r(NULL, " \t\n", save); }
static double next_num(char **save) { char *s = next_tok(save); return s ? strtod(s, NULL) : NAN; }

static pat *parse_pat(char **save) {
    char *kind = next_tok(save);
    pat *p = calloc(1, sizeof *p);
    if (!kind || !p) return NULL;
    if (!strcmp(kind, "C")) { p->kind = P_CONST; p->a[0] = next_num(save); return p; }
    if (!strcmp(kind, "SQ")) {
        p->kind = P_SQ;
        for (int i = 0; i < 5; i++) p->a[i] = next_num(save);
        return p;
    }
    if (!strcmp(kind, "PER")) {
        p->kind = P_PER; p->a[0] = next_num(save);
        p->parts = calloc(1, sizeof(pat *));
        if (!(p->parts[0] = parse_pat(save))) return NULL;
        p->per_period = p_energy(p->parts[0], p->a[0]);
        return p;
    }
    if (!strcmp(kind, "PWC") || !strcmp(kind, "PWL") || !strcmp(kind, "SCH")) {
        p->kind = kind[1] == 'W' ? (kind[2] == 'C' ? P_PWC : P_PWL) : P_SCH;
        p->n = (int)next_num(save);
        p->t = calloc(p->n, sizeof(double)); p->v = calloc(p->n, sizeof(double));
        p->cum = calloc(p->n, sizeof(double)); p->parts = calloc(p->n, sizeof(pat *));
        for (int i = 0; i < p->n; i++) {
            p->t[i] = next_num(save);
            if (p->kind == P_SCH) { if (!(p->parts[i] = parse_pat(save))) return NULL; }
            else p->v[i] = next_num(save);
        }
        for (int i = 1; i < p->n; i++) {
            double dt = p->t[i] - p->t[i - 1];
            p->cum[i] = p->cum[i - 1] + (p->kind == P_PWC ? p->v[i - 1] * dt
                        : p->kind == P_PWL ? 0.5 * (p->v[i] + p->v[i - 1]) * dt
                        : p_energy(p->parts[i - 1], dt));
        }
        return p;
    }
    return NULL;
}

/* ---- devices ----------------------------------------------------------- */
struct nvmlDevice_st {
    int index, mig;  /* mig: -1 for a full GPU, else the MIG instance */
    struct nvmlDevice_st *parent;
    char uuid[96], name[96];
    int energy_counter, instant_usage, mig_count;
    double idle_w, max_w;
    unsigned long long mem_bytes, offset_mj;
    unsigned max_sm_mhz;
    pat *pattern;
    int lost;
    char unsupported[2048];
};

typedef struct { int dev; unsigned pid; double start, end, share; int gi; } proc_t;

static struct nvmlDevice_st devs[MAX_DEV], migs[MAX_DEV][MAX_MIG];
static proc_t procs[MAX_PROC];
static int ndev, nproc, initialized;
static double epoch;
static char driver_version[80] = "560.35.03-sim";

/* call counting */
static const char *count_path;
static atomic_ullong total_calls;
static double last_dump;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void dump_counts(void) {
    if (!count_path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", count_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%llu %.6f\n", (unsigned long long)atomic_load(&total_calls), now_s());
    fclose(f);
    rename(tmp, count_path);
}

static void count_call(void) {
    atomic_fetch_add(&total_calls, 1);
    if (count_path) {
        double t = now_s();
        if (t - last_dump >= 1.0) { last_dump = t; dump_counts(); }
    }
}

__attribute__((destructor)) static void at_unload(void) { dump_counts(); }

static int load_trace(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    ndev = nproc = 0;
    while (getline(&line, &cap, f) > 0) {
        char *save, *kind = strtok_r(line, " \t\n", &save);
        if (!kind || kind[0] == '#') continue;
        if (!strcmp(kind, "epoch")) epoch = next_num(&save);
        else if (!strcmp(kind, "device") && ndev < MAX_DEV) {
            struct nvmlDevice_st *d = &devs[ndev];
            memset(d, 0, sizeof *d);
            d->index = (int)next_num(&save); d->mig = -1;
            snprintf(d->uuid, sizeof d->uuid, "%s", next_tok(&save));
            d->energy_counter = (int)next_num(&save); d->instant_usage = (int)next_num(&save);
            d->idle_w = next_num(&save); d->max_w = next_num(&save);
            d->mem_bytes = strtoull(next_tok(&save), NULL, 10);
            d->max_sm_mhz = (unsigned)next_num(&save);
            d->offset_mj = strtoull(next_tok(&save), NULL, 10);
            d->mig_count = (int)next_num(&save);
            char *rest = strtok_r(NULL, "\n", &save);
            snprintf(d->name, sizeof d->name, "%s", rest ? rest : "Simulated GPU");
            for (int m = 0; m < d->mig_count && m < MAX_MIG; m++) {
                struct nvmlDevice_st *g = &migs[ndev][m];
                *g = *d;
                g->mig = m; g->parent = d;
                snprintf(g->uuid, sizeof g->uuid, "MIG-%.*s%04d", (int)strlen(d->uuid) - 8, d->uuid + 4, m);
            }
            ndev++;
        } else if (!strcmp(kind, "pattern")) {
            int i = (int)next_num(&save);
            if (i >= 0 && i < ndev && !(devs[i].pattern = parse_pat(&save))) { free(line); fclose(f); return -2; }
            for (int m = 0; m < devs[i].mig_count; m++) migs[i][m].pattern = devs[i].pattern;
        } else if (!strcmp(kind, "proc") && nproc < MAX_PROC) {
            proc_t *p = &procs[nproc++];
            p->dev = (int)next_num(&save); p->pid = (unsigned)next_num(&save);
            p->start = next_num(&save); p->end = next_num(&save); p->share = next_num(&save);
            double gi = next_num(&save);
            p->gi = isnan(gi) ? -1 : (int)gi;
        }
    }
    free(line);
    fclose(f);
    for (int i = 0; i < ndev; i++) if (!devs[i].pattern) return -2;
    return 0;
}

static void parse_faults(void) {
    const char *lost = getenv("NVML_SIM_LOST"), *unsup = getenv("NVML_SIM_UNSUPPORTED");
    for (int i = 0; i < ndev; i++) { devs[i].lost = 0; devs[i].unsupported[0] = 0; }
    if (lost) {
        char buf[4096], *save, *tok;
        snprintf(buf, sizeof buf, "%s", lost);
        for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int i = atoi(tok);
            if (i >= 0 && i < ndev) devs[i].lost = 1;
        }
    }
    if (unsup) {
        char buf[8192], *save, *tok;
        snprintf(buf, sizeof buf, "%s", unsup);
        for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *colon = strchr(tok, ':');
            int i = atoi(tok);
            if (colon && i >= 0 && i < ndev) {
                strncat(devs[i].unsupported, colon + 1, sizeof devs[i].unsupported - strlen(devs[i].unsupported) - 2);
                strcat(devs[i].unsupported, ",");
            }
        }
    }
}

/* Common entry checks for device functions. */
static nvmlReturn_t enter(nvmlDevice_t d, const char *fn) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!d) return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlDevice_st *full = d->parent ? d->parent : d;
    if (full->lost) return NVML_ERROR_GPU_IS_LOST;
    char key[128];
    snprintf(key, sizeof key, "%s,", fn);
    if (strstr(full->unsupported, key)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}
#define ENTER(d) do { nvmlReturn_t r_ = enter((d), __func__); if (r_ != NVML_SUCCESS) return r_; } while (0)
#define NEED(p) do { if (!(p)) return NVML_ERROR_INVALID_ARGUMENT; } while (0)

static double sim_t(void) { return now_s() - epoch; }

/* Mean power over the window before the last 100-ms refresh (see sim/scenario.py). */
static double window_power(const struct nvmlDevice_st *d, double window) {
    double t = sim_t(), tb = floor(t / 0.1) * 0.1;
    if (tb <= 0) return p_power(d->pattern, 0);
    double t0 = fmax(tb - window, 0.0);
    if (tb <= t0) return p_power(d->pattern, tb);
    return (p_energy(d->pattern, tb) - p_energy(d->pattern, t0)) / (tb - t0);
}

static double utilization(const struct nvmlDevice_st *d) {
    double u = (window_power(d, 1.0) - d->idle_w) / (d->max_w - d->idle_w);
    return u < 0 ? 0 : u > 1 ? 1 : u;
}

static unsigned mw(double w) { return (unsigned)llround(w * 1000.0); }

/* ---- init / system ------------------------------------------------------ */
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    count_call();
    const char *err = getenv("NVML_SIM_INIT_ERROR"), *trace = getenv("NVML_SIM_TRACE");
    if (err && *err) return (nvmlReturn_t)atoi(err);
    if (!trace || load_trace(trace) != 0) return NVML_ERROR_DRIVER_NOT_LOADED;
    const char *dv = getenv("NVML_SIM_DRIVER_VERSION");
    if (dv) snprintf(driver_version, sizeof driver_version, "%s", dv);
    count_path = getenv("NVML_SIM_COUNTS");
    parse_faults();
    initialized = 1;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
#undef nvmlInit
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }
EXPORT nvmlReturn_t nvmlShutdown(void) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized = 0;
    dump_counts();
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_str(char *dst, unsigned len, const char *src) {
    NEED(dst);
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_str(version, length, driver_version);
}
EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_str(version, length, "12.560.35-sim");
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    count_call();
    NEED(v);
    *v = 12060;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    NEED(count);
    *count = (unsigned)ndev;
    return NVML_SUCCESS;
}
#undef nvmlDeviceGetCount
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    NEED(device);
    if (index >= (unsigned)ndev) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devs[index];
    return NVML_SUCCESS;
}
#undef nvmlDeviceGetHandleByIndex
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    count_call();
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    NEED(uuid && device);
    for (int i = 0; i < ndev; i++)
        if (!strcmp(devs[i].uuid, uuid)) { *device = &devs[i]; return NVML_SUCCESS; }
    return NVML_ERROR_NOT_FOUND;
}

/* ---- identity ------------------------------------------------------------ */
EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    ENTER(d); NEED(index); *index = (unsigned)d->index; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER(d); return copy_str(name, length, d->name);
}
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER(d); return copy_str(uuid, length, d->uuid);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    ENTER(d); NEED(pci);
    memset(pci, 0, sizeof *pci);
    pci->bus = 0x18 + 0x10 * (unsigned)d->index;
    pci->pciDeviceId = 0x233010de;
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus & 0xff);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", pci->bus & 0xff);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(d, pci); }
#undef nvmlDeviceGetPciInfo
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t d, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(d, pci); }

/* ---- MIG ----------------------------------------------------------------- */
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    ENTER(d); NEED(current && pending);
    *current = *pending = d->mig_count > 0 ? NVML_DEVICE_MIG_ENABLE : NVML_DEVICE_MIG_DISABLE;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    ENTER(d); NEED(count); *count = MAX_MIG; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    ENTER(d); NEED(mig);
    if (index >= (unsigned)d->mig_count) return NVML_ERROR_NOT_FOUND;
    *mig = &migs[d->index][index];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d); NEED(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = 1 + (unsigned)d->mig;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d); NEED(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = 0;
    return NVML_SUCCESS;
}

/* ---- power and energy ------------------------------------------------------ */
EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
    ENTER(d); NEED(power);
    *power = mw(window_power(d, d->instant_usage ? 0.025 : 1.0));
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *energy) {
    ENTER(d); NEED(energy);
    if (!d->energy_counter) return NVML_ERROR_NOT_SUPPORTED;
    *energy = (unsigned long long)floor(p_energy(d->pattern, sim_t()) * 1000.0) + d->offset_mj;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit) {
    ENTER(d); NEED(limit); *limit = mw(d->max_w); return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned int *limit) {
    ENTER(d); NEED(limit); *limit = mw(d->max_w); return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    ENTER(d); NEED(values && count >= 0);
    double t = sim_t();
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        double window = v->fieldId == NVML_FI_DEV_POWER_INSTANT ? 0.025
                      : v->fieldId == NVML_FI_DEV_POWER_AVERAGE ? 1.0 : 0;
        v->timestamp = (long long)(now_s() * 1e6);
        v->latencyUsec = 0;
        if (v->fieldId == NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION && d->energy_counter) {
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            v->value.ullVal = (unsigned long long)floor(p_energy(d->pattern, t) * 1000.0) + d->offset_mj;
            v->nvmlReturn = NVML_SUCCESS;
        } else if (window > 0 && d->energy_counter) {
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            v->value.uiVal = mw(window_power(d, window));
            v->nvmlReturn = NVML_SUCCESS;
        } else {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

/* ---- utilisation, memory, thermals, clocks ---------------------------------- */
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    ENTER(d); NEED(u);
    double x = utilization(d);
    u->gpu = (unsigned)llround(100 * x);
    u->memory = (unsigned)llround(60 * x);
    return NVML_SUCCESS;
}
static void fill_memory(nvmlDevice_t d, unsigned long long *total, unsigned long long *freem,
                        unsigned long long *used) {
    *total = d->mem_bytes;
    *used = (unsigned long long)(d->mem_bytes * (0.01 + 0.74 * utilization(d)));
    *freem = *total - *used;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    ENTER(d); NEED(m); fill_memory(d, &m->total, &m->free, &m->used); return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    ENTER(d); NEED(m);
    m->reserved = 0;
    fill_memory(d, &m->total, &m->free, &m->used);
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, nvmlTemperatureSensors_t s, unsigned int *temp) {
    ENTER(d); NEED(temp);
    if (s != NVML_TEMPERATURE_GPU) return NVML_ERROR_NOT_SUPPORTED;
    *temp = (unsigned)(32 + 45 * utilization(d));
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, nvmlClockType_t type, unsigned int *clock) {
    ENTER(d); NEED(clock);
    double u = fmin(1.0, 4 * utilization(d));
    if (type == NVML_CLOCK_SM || type == NVML_CLOCK_GRAPHICS) *clock = (unsigned)(345 + (d->max_sm_mhz - 345) * u);
    else if (type == NVML_CLOCK_MEM) *clock = 2619;
    else return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, nvmlClockType_t type, unsigned int *clock) {
    ENTER(d); NEED(clock);
    *clock = type == NVML_CLOCK_MEM ? 2619 : d->max_sm_mhz;
    return NVML_SUCCESS;
}

/* ---- processes ------------------------------------------------------------ */
static int active(const proc_t *p, int dev, double t) { return p->dev == dev && p->start <= t && t < p->end; }

static nvmlReturn_t list_procs(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    NEED(count);
    double t = sim_t();
    unsigned n = 0;
    for (int i = 0; i < nproc; i++) n += active(&procs[i], d->index, t);
    if (!infos || *count < n) { unsigned want = n; *count = want; return want ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS; }
    unsigned k = 0;
    double used = d->mem_bytes * (0.01 + 0.74 * utilization(d));
    for (int i = 0; i < nproc; i++) {
        if (!active(&procs[i], d->index, t)) continue;
        infos[k].pid = procs[i].pid;
        infos[k].usedGpuMemory = (unsigned long long)(used * procs[i].share);
        if (procs[i].gi >= 0) {
            infos[k].gpuInstanceId = (unsigned)procs[i].gi;
            infos[k].computeInstanceId = 0;
        } else {
            infos[k].gpuInstanceId = infos[k].computeInstanceId = 0xFFFFFFFF;
        }
        k++;
    }
    *count = k;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    ENTER(d); return list_procs(d, count, infos);
}
#undef nvmlDeviceGetComputeRunningProcesses
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    ENTER(d); return list_procs(d, count, infos);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    ENTER(d); NEED(count); *count = 0; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    ENTER(d); NEED(count); *count = 0; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t d, nvmlProcessUtilizationSample_t *u,
                                                    unsigned int *count, unsigned long long last_seen) {
    (void)last_seen;
    ENTER(d); NEED(count);
    double t = sim_t();
    unsigned n = 0;
    for (int i = 0; i < nproc; i++) n += active(&procs[i], d->index, t);
    if (!u || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    if (n == 0) { *count = 0; return NVML_ERROR_NOT_FOUND; }
    double util = utilization(d);
    unsigned k = 0;
    for (int i = 0; i < nproc; i++) {
        if (!active(&procs[i], d->index, t)) continue;
        u[k].pid = procs[i].pid;
        u[k].timeStamp = (unsigned long long)(now_s() * 1e6);
        u[k].smUtil = (unsigned)llround(100 * util * procs[i].share);
        u[k].memUtil = (unsigned)llround(60 * util * procs[i].share);
        u[k].encUtil = u[k].decUtil = 0;
        k++;
    }
    *count = k;
    return NVML_SUCCESS;
}

/* ---- queries other exporters make (values are plausible, not modelled) ---- */
EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *period_us) {
    ENTER(d); NEED(util && period_us); *util = 0; *period_us = 1000000; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t d, unsigned int *util, unsigned int *period_us) {
    ENTER(d); NEED(util && period_us); *util = 0; *period_us = 1000000; return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t d, unsigned int *speed) {
    ENTER(d); NEED(speed);
    return NVML_ERROR_NOT_SUPPORTED;  /* passively cooled SXM boards report no fan */
}
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t d, nvmlPcieUtilCounter_t counter, unsigned int *value) {
    ENTER(d); NEED(value); *value = (unsigned)(1000 + 50000 * utilization(d)); return NVML_SUCCESS;  /* KB/s */
}
