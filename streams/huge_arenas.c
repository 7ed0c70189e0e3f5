/* streams._huge_arenas: CPython's small-object arenas on transparent huge pages.
 *
 * pymalloc takes its memory from the kernel in 1 MiB arenas (PyObject_SetArenaAllocator); by
 * default each is its own mmap of 4 KiB pages. A worker holds ~10,000 customer states of ~55
 * objects each, spread over a few hundred MiB of arenas, and every event reads one cold state:
 * besides the cache misses, each of its objects sits on another 4 KiB page, a TLB miss and a
 * page walk apiece. This allocator carves the arenas out of 64 MiB chunks aligned to 2 MiB and
 * madvised MADV_HUGEPAGE, so that the kernel backs them with 2 MiB pages where it can
 * (/sys/kernel/mm/transparent_hugepage/enabled set to "madvise" or "always"; with "never" they
 * are ordinary pages and nothing else changes).
 *
 * Behaviour:
 * - Only requests of exactly ARENA_BYTES (pymalloc's arena size on 64-bit CPython 3.10-3.12)
 *   are served here; any other size goes to the allocator installed before (CPython's mmap),
 *   and so does an arena request when no chunk can be mapped.
 * - A freed arena is kept for reuse (its address range is never returned to the kernel, so the
 *   address space stays bounded by the peak). The free list is a stack: the RESIDENT_FREE_ARENAS
 *   most recently freed arenas keep their pages; when another is freed, the one that drops
 *   below them gives its pages back (MADV_DONTNEED), so a shrinking heap returns its memory
 *   and a growing one is served resident arenas first (a given-back one refaults as zero
 *   pages). An entry's low bit marks it given back (arenas are page-aligned).
 * - Arenas allocated before install() are freed into the same reuse list: they are valid 1 MiB
 *   mappings, only not on huge pages.
 * - Every entry point runs with the GIL held (pymalloc's contract); no Python object is
 *   allocated inside the allocator.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define ARENA_BYTES ((size_t)1 << 20)
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define CHUNK_BYTES ((size_t)64 << 20)
#define RESIDENT_FREE_ARENAS 64
#define GIVEN_BACK ((uintptr_t)1)

static PyObjectArenaAllocator previous;
static int installed;
static char *next_arena, *chunk_end;
static void **free_arenas;
static size_t n_free, free_capacity;
static unsigned long long arenas_served, chunks_mapped, chunk_map_failures;
static unsigned long long reused_resident, reused_given_back, pages_given_back;
static uintptr_t last_chunk_start;

static int
map_chunk(void)
{
    size_t length = CHUNK_BYTES + HUGE_PAGE_BYTES;
    char *mapped = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) {
        chunk_map_failures++;
        return 0;
    }
    char *start = (char *)(((uintptr_t)mapped + HUGE_PAGE_BYTES - 1)
                           & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    char *end = start + CHUNK_BYTES;
    if (start > mapped) {
        munmap(mapped, (size_t)(start - mapped));
    }
    if (mapped + length > end) {
        munmap(end, (size_t)(mapped + length - end));
    }
    (void)madvise(start, CHUNK_BYTES, MADV_HUGEPAGE); /* fails only where THP is unavailable */
    next_arena = start;
    chunk_end = end;
    last_chunk_start = (uintptr_t)start;
    chunks_mapped++;
    return 1;
}

static void *
arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (size != ARENA_BYTES) {
        return previous.alloc(previous.ctx, size);
    }
    if (n_free) {
        uintptr_t entry = (uintptr_t)free_arenas[--n_free];
        if (entry & GIVEN_BACK) {
            reused_given_back++;
        }
        else {
            reused_resident++;
        }
        arenas_served++;
        return (void *)(entry & ~GIVEN_BACK);
    }
    if ((next_arena == NULL || (size_t)(chunk_end - next_arena) < size) && !map_chunk()) {
        return previous.alloc(previous.ctx, size);
    }
    void *arena = next_arena;
    next_arena += size;
    arenas_served++;
    return arena;
}

static void
arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size != ARENA_BYTES) {
        previous.free(previous.ctx, ptr, size);
        return;
    }
    if (n_free == free_capacity) {
        size_t capacity = free_capacity ? 2 * free_capacity : 256;
        void **grown = realloc(free_arenas, capacity * sizeof(void *));
        if (grown == NULL) { /* keep the mapping, give its pages back: nothing else to do */
            (void)madvise(ptr, size, MADV_DONTNEED);
            pages_given_back++;
            return;
        }
        free_arenas = grown;
        free_capacity = capacity;
    }
    free_arenas[n_free++] = ptr;
    if (n_free > RESIDENT_FREE_ARENAS) {
        /* the entry just below the resident top gives its pages back, once */
        uintptr_t entry = (uintptr_t)free_arenas[n_free - 1 - RESIDENT_FREE_ARENAS];
        if (!(entry & GIVEN_BACK)) {
            (void)madvise((void *)entry, ARENA_BYTES, MADV_DONTNEED);
            pages_given_back++;
            free_arenas[n_free - 1 - RESIDENT_FREE_ARENAS] = (void *)(entry | GIVEN_BACK);
        }
    }
}

static PyObject *
install(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (installed) {
        Py_RETURN_FALSE;
    }
    PyObject_GetArenaAllocator(&previous);
    PyObjectArenaAllocator ours = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&ours);
    installed = 1;
    Py_RETURN_TRUE;
}

static PyObject *
stats(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue(
        "{s:O,s:K,s:K,s:K,s:K,s:K,s:K,s:n,s:K,s:n}",
        "installed", installed ? Py_True : Py_False,
        "arenas_served", arenas_served,
        "reused_resident", reused_resident,
        "reused_given_back", reused_given_back,
        "pages_given_back", pages_given_back,
        "chunks_mapped", chunks_mapped,
        "chunk_map_failures", chunk_map_failures,
        "free_arenas", (Py_ssize_t)n_free,
        "last_chunk_start", (unsigned long long)last_chunk_start,
        "chunk_bytes", (Py_ssize_t)CHUNK_BYTES);
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS,
     "Serve pymalloc's arenas from huge-page chunks from now on; False if already installed."},
    {"stats", stats, METH_NOARGS, "What the allocator did so far, as a dict."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_huge_arenas",
    "CPython's small-object arenas on transparent huge pages (see streams/huge_arenas.c).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__huge_arenas(void)
{
    return PyModule_Create(&module_def);
}
