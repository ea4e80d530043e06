/* stability_synthetic.c - the synthetic test of the SGD stability criteria.
 *
 *   build/tools/stability_synthetic [--steps N] [--reps N] [--out DIR]
 *
 * n = 100 rank-one per-sample Hessians with coherence sigma = 1 .. 50,
 * lr = 0.5, batch sizes 1 .. 49 drawn without replacement, `steps` steps
 * (1000) and `reps` repetitions (10) per cell. Prints the agreement of the
 * observed map with the exact mean-square criterion and with the coherence
 * threshold. With --out, writes DIR/stability_synthetic.csv (one row per
 * cell) and DIR/stability_synthetic.dat (gnuplot's matrix format: 0 both
 * stable, 1 predicted only, 2 observed only, 3 both unstable).
 * `make results-stability` runs it and renders the heatmap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze.h"

enum { N = 100, MAX_SIGMA = 50, MAX_BATCH = 49 };

static void usage(void)
{
    fprintf(stderr, "usage: stability_synthetic [--steps N] [--reps N] [--out DIR]\n");
    exit(2);
}

static long parse_count(const char *text)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < 1 || v > 1000000) {
        fprintf(stderr, "stability_synthetic: invalid count '%s': expected 1 .. 1000000\n",
                text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long steps = 1000, reps = 10;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--steps") == 0)
            steps = parse_count(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0)
            reps = parse_count(argv[++i]);
        else if (strcmp(argv[i], "--out") == 0)
            out = argv[++i];
        else
            usage();
    }

    FILE *csv = NULL, *dat = NULL;
    if (out) {
        char path[4096];
        snprintf(path, sizeof path, "%s/stability_synthetic.csv", out);
        csv = fopen(path, "w");
        snprintf(path, sizeof path, "%s/stability_synthetic.dat", out);
        dat = fopen(path, "w");
        if (!csv || !dat) {
            fprintf(stderr, "stability_synthetic: cannot write to %s\n", out);
            return 1;
        }
        fprintf(csv, "sigma,batch,rho,predicted,coherence,diverged,reps,observed\n");
    }

    int cells = 0, exact_agree = 0, coherence_agree = 0;
    for (int sigma = 1; sigma <= MAX_SIGMA; sigma++) {
        for (int batch = 1; batch <= MAX_BATCH; batch++) {
            SyntheticCell c;
            stability_synthetic_cell(N, sigma, 0.5, batch, steps, (int)reps, 2024, &c);
            cells++;
            exact_agree += c.predicted == c.observed;
            coherence_agree += c.coherence == c.observed;
            if (csv)
                fprintf(csv, "%d,%d,%.9g,%d,%d,%d,%ld,%d\n", sigma, batch, c.rho, c.predicted,
                        c.coherence, c.diverged, reps, c.observed);
            if (dat)
                fprintf(dat, "%s%d", batch > 1 ? " " : "", c.predicted + 2 * c.observed);
        }
        if (dat)
            fprintf(dat, "\n");
    }
    printf("cells: %d (sigma 1..%d x batch 1..%d), %ld steps, %ld repetitions\n", cells,
           MAX_SIGMA, MAX_BATCH, steps, reps);
    printf("exact mean-square criterion agrees on %d cells (%.1f%%)\n", exact_agree,
           100.0 * exact_agree / cells);
    printf("coherence threshold agrees on %d cells (%.1f%%)\n", coherence_agree,
           100.0 * coherence_agree / cells);
    if (csv)
        fclose(csv);
    if (dat)
        fclose(dat);
    return 0;
}
