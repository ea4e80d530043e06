/* memory_size.h - parsing memory sizes given on the command line. */
#ifndef BOCB_MEMORY_SIZE_H
#define BOCB_MEMORY_SIZE_H

#include <stdbool.h>
#include <stddef.h>

/* Parses a positive size in bytes: decimal digits with an optional
 * suffix K, M, G or T (upper or lower case, powers of 1024, an optional
 * "iB" or "B" after it). Returns false for an empty, zero, malformed or
 * overflowing size, and leaves *bytes unchanged then. */
bool parse_memory_size(const char *text, size_t *bytes);

#endif
