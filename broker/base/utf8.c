/* utf8.c - see utf8.h. The ranges are RFC 3629's table (section 4): they
 * exclude overlong forms, surrogates and code points above U+10FFFF. */
#include "utf8.h"

bool utf8_feed(struct utf8_check *u, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char b = p[i];
        if (u->need) {
            if (b < u->lo || b > u->hi)
                return false;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
            continue;
        }
        if (b < 0x80)
            continue;
        u->lo = 0x80;
        u->hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            u->need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            u->need = 2;
            if (b == 0xE0)
                u->lo = 0xA0;         /* no overlong 3-byte forms */
            else if (b == 0xED)
                u->hi = 0x9F;         /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            u->need = 3;
            if (b == 0xF0)
                u->lo = 0x90;         /* no overlong 4-byte forms */
            else if (b == 0xF4)
                u->hi = 0x8F;         /* nothing above U+10FFFF */
        } else {
            return false;             /* 0x80-0xC1, 0xF5-0xFF never start a character */
        }
    }
    return true;
}
