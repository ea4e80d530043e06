/* augment_setting.c - the `augment` setting of an experiment.
 *
 *     augment = [crop(padding = 4), flip]
 *
 * lists the transforms of every training batch (runtime/augment.h). The
 * value is read from the syntax, as a schedule is, so `crop` and `flip`
 * need no declaration and never clash with one.
 */
#include <math.h>
#include <string.h>

#include "lower.h"

static const char *const transform_names[] = {"crop", "flip"};

/* Reads the arguments of one transform call into `out`. */
static bool transform_args(Lower *l, const Expr *e, const char *transform, RtAugment *out)
{
    bool crop = strcmp(transform, "crop") == 0, ok = true, given = false;
    const char *param = crop ? "padding" : "p";
    for (int a = 0; e->kind == EX_CALL && a < e->call.nargs; a++) {
        const Arg *arg = &e->call.args[a];
        Value v = eval_expr(l, arg->value);
        if (v.kind == VAL_ERROR) {
            ok = false;
            continue;
        }
        if (!arg->name || strcmp(arg->name, param) != 0) {
            SrcLoc loc = arg->name ? arg->name_loc : arg->value->loc;
            diag_error(loc, "transform '%s' takes one argument, '%s', by name", transform,
                       param);
            ok = false;
            continue;
        }
        if (given) {
            diag_error(arg->name_loc, "'%s' is given more than once", param);
            ok = false;
            continue;
        }
        given = true;
        if (crop) {
            ok &= val_to_int(&v, "argument 'padding' of crop", 1, 1024, &out->padding);
        } else if (v.kind != VAL_NUMBER || !(v.number.value >= 0 && v.number.value <= 1)) {
            diag_error(v.loc, "argument 'p' of flip must be a probability in [0, 1]");
            ok = false;
        } else if (v.number.value > 0 && v.number.value < ldexp(1.0, -RT_AUGMENT_FLIP_BITS)) {
            /* Such a p, subnormal or not, would flip with probability 2^-24. */
            diag_error(v.loc, "argument 'p' of flip must be 0 or at least 2^-%d (about %.1g), "
                       "the resolution of the flip's random draw, but it is %g",
                       RT_AUGMENT_FLIP_BITS, ldexp(1.0, -RT_AUGMENT_FLIP_BITS),
                       v.number.value);
            ok = false;
        } else {
            out->flip_p = v.number.value;
        }
    }
    return ok;
}

/* Reads one transform, `crop`, `flip` or a call of either, into `out`. */
static bool eval_transform(Lower *l, const Expr *e, RtAugment *out)
{
    const Expr *callee = e->kind == EX_CALL ? e->call.callee : e;
    if (callee->kind != EX_NAME) {
        diag_error(e->loc, "setting 'augment' expects transforms such as "
                   "[crop(padding = 4), flip]");
        return false;
    }
    const char *name = callee->name;
    int nnames = (int)BOCB_ARRAY_LEN(transform_names);
    if (strcmp(name, "crop") != 0 && strcmp(name, "flip") != 0) {
        const char *near = closest_name(name, transform_names, nnames);
        if (near)
            diag_error(callee->loc, "unknown transform '%s'; did you mean '%s'?", name, near);
        else
            diag_error(callee->loc, "unknown transform '%s'; the transforms are crop and flip",
                       name);
        return false;
    }
    bool *on = strcmp(name, "crop") == 0 ? &out->crop : &out->flip;
    if (*on) {
        diag_error(callee->loc, "transform '%s' is listed twice", name);
        return false;
    }
    *on = true;
    return transform_args(l, e, name, out);
}

bool augment_eval_setting(Lower *l, const Expr *e, RtAugment *out, SrcLoc *loc)
{
    *out = (RtAugment){.padding = 4, .flip_p = 0.5};
    *loc = e->loc;
    /* `none` and `[]` turn augmentation off, for a -D override. */
    if (e->kind == EX_NAME && strcmp(e->name, "none") == 0)
        return true;
    if (e->kind != EX_LIST)
        return eval_transform(l, e, out);
    bool ok = true;
    for (int i = 0; i < e->list.nitems; i++)
        ok &= eval_transform(l, e->list.items[i], out);
    return ok;
}

bool augment_check_data(const ExperimentSpec *spec)
{
    if (!(spec->augment.crop || spec->augment.flip) || !spec->data ||
        spec->data->format != DATA_FORTUNES)
        return true;
    diag_error(spec->augment_loc, "setting 'augment' applies to image data, but '%s' is text",
               spec->data->name ? spec->data->name : "the data");
    return false;
}

char *augment_settings_text(const char *settings, const RtAugment *aug)
{
    StrBuf sb = {0};
    sb_printf(&sb, "%s augment=", settings);
    if (aug->crop)
        sb_printf(&sb, "crop(%lld)%s", (long long)aug->padding, aug->flip ? "," : "");
    if (aug->flip) {
        char p[32];
        format_double(p, sizeof p, aug->flip_p);
        sb_printf(&sb, "flip(%s)", p);
    }
    return sb.data;
}
