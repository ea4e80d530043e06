/* summary.h - the coupling report of a grid: summary.md and summary.json.
 *
 * The report is computed from a results table alone (runs.csv: one row
 * per run and epoch), so it can be rebuilt for any finished or partial
 * grid without training anything. For every backbone (model) it gives the
 * accuracy of each optimizer: the mean and standard deviation over seeds
 * of the last epoch's test accuracy. It marks the top 4 optimizers and
 * lists the failed runs. It gives the mean, standard deviation and range
 * over the optimizers after dropping the worst one, the mean of each
 * optimizer family, and a coupling verdict. docs/design.md states the
 * rule behind the verdict.
 */
#ifndef BOCB_SUMMARY_H
#define BOCB_SUMMARY_H

#include <stdbool.h>

/* The optimizer families of the BOCB study: fixed learning rate with
 * momentum, adaptive learning rate with momentum, estimated learning rate
 * with momentum, and adaptive learning rate without momentum. */
typedef enum OptimizerFamily {
    FAMILY_FIXED,
    FAMILY_ADAPTIVE,
    FAMILY_ESTIMATED,
    FAMILY_NO_MOMENTUM,
    FAMILY_OTHER,
} OptimizerFamily;

enum { FAMILY_COUNT = FAMILY_OTHER + 1 };

/* Returns the family of a standard-library optimizer, by the name of its
 * declaration ("adamw"), or FAMILY_OTHER. */
OptimizerFamily optimizer_family(const char *name);

/* Returns the column spelling of `family`: "fixed-lr", "adaptive",
 * "estimated-lr", "no-momentum" or "other". */
const char *family_name(OptimizerFamily family);

/* Reads `runs_csv` and writes summary.md and summary.json into `dir`,
 * each atomically. Returns false and sets *error (malloc'd) naming the
 * file, and the line for a malformed table. */
bool summary_write(const char *runs_csv, const char *dir, char **error);

#endif
