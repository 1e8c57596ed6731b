/* A fake libnvidia-ml.so for the inventory tests: two GPUs, driver 580.159.04, CUDA 13.0.
   Build variants: -DMODE_FAIL (nvmlInit_v2 fails), -DMODE_HANG (nvmlInit_v2 sleeps 30 s),
   -DMODE_NOCC (compute capability not supported). Handles are real pointers into this
   library, so a truncated 64-bit handle shows up as a wrong answer or a crash. */
#include <string.h>
#include <unistd.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef void *nvmlDevice_t;
static int devices[2];

static int index_of(nvmlDevice_t d) { return (int)((int *)d - devices); }

const char *nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : "Unknown Error"; }

int nvmlInit_v2(void) {
#ifdef MODE_HANG
    sleep(30);
#endif
#ifdef MODE_FAIL
    return 9;
#endif
    return 0;
}

int nvmlShutdown(void) { return 0; }

int nvmlSystemGetDriverVersion(char *v, unsigned int n) { strncpy(v, "580.159.04", n); return 0; }

int nvmlSystemGetCudaDriverVersion_v2(int *v) { *v = 13000; return 0; }

int nvmlDeviceGetCount_v2(unsigned int *c) { *c = 2; return 0; }

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (i > 1) return 2;
    *d = &devices[i];
    return 0;
}

int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int n) {
    strncpy(name, index_of(d) ? "Tesla T4" : "NVIDIA H100 80GB HBM3", n);
    return 0;
}

int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
#ifdef MODE_NOCC
    return 3;
#endif
    if (index_of(d) == 1) { *major = 7; *minor = 5; } else { *major = 9; *minor = 0; }
    return 0;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    m->total = (index_of(d) ? 15360ULL : 81559ULL) << 20;
    m->free = m->total;
    m->used = 0;
    return 0;
}

int nvmlDeviceGetUUID(nvmlDevice_t d, char *u, unsigned int n) {
    strncpy(u, index_of(d) ? "GPU-t4" : "GPU-h100", n);
    return 0;
}
