/* memory_size.c - parsing memory sizes given on the command line. */
#include "memory_size.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

bool parse_memory_size(const char *text, size_t *bytes)
{
    size_t value = 0;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++)
        if (__builtin_mul_overflow(value, 10, &value) ||
            __builtin_add_overflow(value, (size_t)(*p - '0'), &value))
            return false;

    int shift = 0;
    switch (*p) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: break;
    }
    if (shift)
        p++;
    if (shift && strcasecmp(p, "iB") == 0)
        p += 2;
    else if (strcasecmp(p, "B") == 0)
        p += 1;
    if (*p != '\0' || value == 0)
        return false;
    if (shift && value > (SIZE_MAX >> shift))
        return false;
    *bytes = value << shift;
    return true;
}
