/* Criteo TSV lines parsed in one pass over their bytes (lazydp_bench/data/criteo_native.py).

   A block holds whole lines, each ending in '\n': label \t I1..I13 \t C1..C26. A line is
   good when it has exactly 40 fields (39 tabs, then the newline), its label is the one
   byte 0 or 1, each dense field is empty or an optional '-' and 1 to 16 decimal digits,
   and each categorical field is empty or 1 to 8 hex digits (either case). Those are the
   rules of the numpy parser (`parse_block` in criteo.py); both give the same arrays.

   The fast path reads a line field by field and gives up at the first byte that breaks
   a rule; `describe_line` then reads the bad line again (once per block, for its first
   bad line) to count its fields and find its first bad field. Bytes after the block's
   last newline are not a line. Empty fields are 0; good lines' values go to the output
   arrays in order, bad lines' indices (0-based in the block) to `bad`.
*/
#include <stdint.h>
#include <string.h>

#define FIELDS 40
#define DENSE 13
#define CATS 26

enum {
    INFO_LINES,       /* lines (newlines) in the block */
    INFO_GOOD,        /* good lines written */
    INFO_BAD,         /* bad lines (all counted; at most `cap_bad` indices written) */
    INFO_FIRST_FIELDS, /* fields of the first line (FIELDS when the block has none) */
    INFO_BAD_LINE,    /* the first bad line's index, or -1 */
    INFO_BAD_FIELDS,  /* its field count */
    INFO_BAD_COL,     /* its first bad field (0: label, 1-13: I1-I13, 14-39: C1-C26); -1 when
                         the count is wrong */
    INFO_BAD_START,   /* that field's offset in the block */
    INFO_BAD_SIZE,    /* and its length in bytes */
    INFO_LEN
};

/* Each byte's hex digit value plus one; 0 for a byte that is not a hex digit. */
static const uint8_t hex_digit[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static int is_sep(uint8_t c) { return c == '\t' || c == '\n'; }

/* Whether field `col` (its bytes s[0..n)) obeys its column's rule. */
static int field_ok(int col, const uint8_t *s, int64_t n) {
    if (col == 0) return n == 1 && (s[0] == '0' || s[0] == '1');
    if (col <= DENSE) {
        if (n == 0) return 1;
        int64_t neg = s[0] == '-';
        if (n - neg == 0 || n - neg > 16) return 0;
        for (int64_t i = neg; i < n; i++)
            if ((uint8_t)(s[i] - '0') >= 10) return 0;
        return 1;
    }
    if (n > 8) return 0;
    for (int64_t i = 0; i < n; i++)
        if (hex_digit[s[i]] == 0) return 0;
    return 1;
}

/* A bad (or first) line from `line`: its field count, and, when that is FIELDS, its first
   bad field's column, offset and length (col -1: none). Returns the byte after its '\n'
   (`stop`: the end of the block's last line). */
static const uint8_t *describe_line(const uint8_t *base, const uint8_t *line,
                                    const uint8_t *stop, int64_t *fields, int64_t *col,
                                    int64_t *start, int64_t *size) {
    const uint8_t *end = memchr(line, '\n', (size_t)(stop - line));
    int64_t count = 1;
    for (const uint8_t *p = line; p < end; p++) count += *p == '\t';
    *fields = count;
    *col = *start = *size = -1;
    if (count != FIELDS) return end + 1;
    const uint8_t *s = line;
    for (int c = 0; c < FIELDS; c++) {
        const uint8_t *e = s;
        while (!is_sep(*e)) e++;
        if (!field_ok(c, s, e - s)) {
            *col = c, *start = s - base, *size = e - s;
            break;
        }
        s = e + 1;
    }
    return end + 1;
}

/* The good line at `p` into label/dense/ids; returns the byte after its '\n', or NULL when
   the line is bad (the outputs may then hold partial values). */
static const uint8_t *parse_line(const uint8_t *p, uint8_t *label, int64_t *dense,
                                 int64_t *ids) {
    if (!((p[0] == '0' || p[0] == '1') && p[1] == '\t')) return NULL;
    *label = (uint8_t)(p[0] - '0');
    p += 2;
    for (int f = 0; f < DENSE; f++) {
        int neg = *p == '-';
        p += neg;
        const uint8_t *s = p;
        uint64_t v = 0, d;
        while ((d = (uint8_t)(*p - '0')) < 10) {
            v = v * 10 + d;
            p++;
        }
        int64_t n = p - s;
        if (*p != '\t' || n > 16 || (neg && n == 0)) return NULL;
        dense[f] = neg ? -(int64_t)v : (int64_t)v;
        p++;
    }
    for (int f = 0; f < CATS; f++) {
        const uint8_t *s = p;
        uint64_t v = 0, h;
        while ((h = hex_digit[*p]) != 0) {
            v = (v << 4) | (h - 1);
            p++;
        }
        if (*p != (f == CATS - 1 ? '\n' : '\t') || p - s > 8) return NULL;
        ids[f] = (int64_t)v;
        p++;
    }
    return p;
}

/* Parse buf[0..n). Good lines go to labels[i], dense[13 i..], ids[26 i..] (room for
   `cap_good`), bad lines' indices to bad[] (room for `cap_bad`; more are counted, not
   written); info[INFO_LEN] says what happened. Returns 0, or -1 when `cap_good` is too
   small (the block's newline count always suffices). */
int criteo_parse(const uint8_t *buf, int64_t n, int64_t cap_good, int64_t cap_bad,
                 uint8_t *labels, int64_t *dense, int64_t *ids, int64_t *bad, int64_t *info) {
    int64_t end = n;
    while (end > 0 && buf[end - 1] != '\n') end--;
    const uint8_t *p = buf, *stop = buf + end;
    int64_t lines = 0, good = 0, nbad = 0;
    info[INFO_FIRST_FIELDS] = FIELDS;
    info[INFO_BAD_LINE] = info[INFO_BAD_FIELDS] = info[INFO_BAD_COL] = -1;
    info[INFO_BAD_START] = info[INFO_BAD_SIZE] = -1;
    while (p < stop) {
        if (good == cap_good) return -1;
        const uint8_t *next = parse_line(p, labels + good, dense + DENSE * good, ids + CATS * good);
        if (next != NULL) {
            good++;
        } else {
            int64_t fields, col, start, size;
            next = describe_line(buf, p, stop, &fields, &col, &start, &size);
            if (lines == 0) info[INFO_FIRST_FIELDS] = fields;
            if (nbad == 0) {
                info[INFO_BAD_LINE] = lines;
                info[INFO_BAD_FIELDS] = fields;
                info[INFO_BAD_COL] = col;
                info[INFO_BAD_START] = start;
                info[INFO_BAD_SIZE] = size;
            }
            if (nbad < cap_bad) bad[nbad] = lines;
            nbad++;
        }
        lines++;
        p = next;
    }
    info[INFO_LINES] = lines;
    info[INFO_GOOD] = good;
    info[INFO_BAD] = nbad;
    return 0;
}

/* rows[i] = offsets[t] + ids[i] mod table_rows[t] for t = i mod 26 (ids >= 0, rows > 0):
   the hash mapping of `map_rows` for m lines. Ids and row counts below 2^32 (Criteo's
   ids have 8 hex digits) take Lemire's fastmod, two multiplies instead of a division
   (exact for every 32-bit dividend and divisor); larger ones the division. */
void criteo_hash_rows(const int64_t *ids, int64_t m, const int64_t *table_rows,
                      const int64_t *offsets, int64_t *rows) {
    uint64_t magic[CATS];
    int small = 1;
    for (int t = 0; t < CATS; t++) {
        small &= (uint64_t)table_rows[t] <= UINT32_MAX;
        magic[t] = UINT64_MAX / (uint64_t)table_rows[t] + 1;
    }
    for (int64_t i = 0; i < m; i++) {
        const int64_t *id = ids + CATS * i;
        int64_t *row = rows + CATS * i;
        int fast = small;
        for (int t = 0; t < CATS; t++) fast &= (uint64_t)id[t] <= UINT32_MAX;
        if (fast) {
            for (int t = 0; t < CATS; t++) {
                uint64_t low = magic[t] * (uint64_t)id[t];
                row[t] = offsets[t] + (int64_t)(((__uint128_t)low * (uint64_t)table_rows[t]) >> 64);
            }
        } else {
            for (int t = 0; t < CATS; t++) row[t] = offsets[t] + id[t] % table_rows[t];
        }
    }
}

/* The newlines in buf[0..n): counted in 64 byte lanes, 255 rows of them at a time (a lane
   cannot overflow), which the compiler vectorises without widening every byte to 64 bits
   (7x faster than the plain loop: ~28 us per 2 MiB on a 2-core EPYC 9004 VM). */
int64_t criteo_count_lines(const uint8_t *buf, int64_t n) {
    enum { LANES = 64, ROWS = 255 };
    int64_t count = 0;
    for (int64_t i = 0; i < n; i += LANES * ROWS) {
        int64_t end = i + LANES * ROWS < n ? i + LANES * ROWS : n, j = i;
        uint8_t lanes[LANES] = {0};
        for (; j + LANES <= end; j += LANES)
            for (int k = 0; k < LANES; k++) lanes[k] += buf[j + k] == '\n';
        for (int k = 0; k < LANES; k++) count += lanes[k];
        for (; j < end; j++) count += buf[j] == '\n';
    }
    return count;
}
