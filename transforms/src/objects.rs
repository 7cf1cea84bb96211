//! Object construction for mappings in one step instead of jaq's sum of one-entry objects.
//!
//! jaq compiles `{a: f, b: g, c: h}` into `{a: f} + ({b: g} + {c: h})`: one map per entry,
//! each merged into the next, so an object of n entries costs n maps, about n²/2 inserts and
//! value clones, and a cartesian product per entry. Mappings are mostly such objects (an order
//! line has ten entries), and that construction was the largest part of a mapping's run.
//!
//! At compile time, every object of 2 to [`MAX_ENTRIES`] explicit `key: value` entries is
//! rewritten into a call to the native `__obj(k1; v1; ...; kn; vn; original)`. When every key
//! and value gives exactly one value, the native builds the map at once (inserting in entry
//! order gives the same map as the merges: a repeated key keeps its first position and its
//! last value). Otherwise (a generator, an empty value, an error) it runs the original object
//! construction, so products, errors and empty results are jaq's own.
//!
//! String interpolation has the same shape (`"a\(f)b"` is `"a" + ((f | tostring) + "b")`)
//! and gets the same treatment with `__str(p1; ...; pn; original)`: one buffer instead of a
//! new string and a cartesian product per part.

use jaq_core::load::lex::StrPart;
use jaq_core::load::parse::{Pattern, Term};
use jaq_core::native::Fun;
use jaq_core::path::Part;
use jaq_core::{Bind, Cv, Native, ValXs};
use jaq_json::Val;

use crate::natives::Data;

/// The natives' names; the leading underscores keep them out of the way of mapping authors.
pub(crate) const NAME: &str = "__obj";
const STR_NAME: &str = "__str";

/// Larger objects keep jaq's construction (one native is registered per size).
pub(crate) const MAX_ENTRIES: usize = 32;

/// Rewrites the object constructions inside `term`, innermost first.
pub(crate) fn rewrite(term: &mut Term<&str>) {
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) | Term::Var(_) => {}
        Term::Str(format, parts) => {
            // `@format "..."` strings apply the format to each part; they keep jaq's way.
            let eligible = format.is_none() && (2..=MAX_ENTRIES).contains(&parts.len());
            let original = eligible.then(|| Term::Str(None, parts.clone()));
            for part in parts.iter_mut() {
                if let StrPart::Term(t) = part {
                    rewrite(t);
                }
            }
            if let Some(original) = original {
                // Each part on its own is a one-part string: a constant, or `f | tostring`.
                let mut args: Vec<Term<&str>> = std::mem::take(parts)
                    .into_iter()
                    .map(|part| Term::Str(None, vec![part]))
                    .collect();
                args.push(original);
                *term = Term::Call(STR_NAME, args);
            }
        }
        Term::Arr(inner) => {
            if let Some(t) = inner {
                rewrite(t);
            }
        }
        Term::Obj(entries) => {
            let eligible = (2..=MAX_ENTRIES).contains(&entries.len())
                && entries.iter().all(|(_, value)| value.is_some());
            // The fallback is the object as written, before its own entries are rewritten, so
            // nested objects are not duplicated at every level.
            let original = eligible.then(|| Term::Obj(entries.clone()));
            for (key, value) in entries.iter_mut() {
                rewrite(key);
                if let Some(value) = value {
                    rewrite(value);
                }
            }
            if let Some(original) = original {
                let mut args = Vec::with_capacity(entries.len() * 2 + 1);
                for (key, value) in std::mem::take(entries) {
                    args.push(key);
                    args.extend(value);
                }
                args.push(original);
                *term = Term::Call(NAME, args);
            }
        }
        Term::Neg(t) | Term::Label(_, t) => rewrite(t),
        Term::BinOp(l, op, r) => {
            if let jaq_core::load::parse::BinaryOp::Pipe(Some(pattern)) = op {
                rewrite_pattern(pattern);
            }
            rewrite(l);
            rewrite(r);
        }
        Term::Fold(_, xs, pattern, args) => {
            rewrite(xs);
            rewrite_pattern(pattern);
            args.iter_mut().for_each(rewrite);
        }
        Term::TryCatch(body, catch) => {
            rewrite(body);
            if let Some(c) = catch {
                rewrite(c);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                rewrite(cond);
                rewrite(then);
            }
            if let Some(t) = otherwise {
                rewrite(t);
            }
        }
        Term::Def(defs, body) => {
            for def in defs {
                rewrite(&mut def.body);
            }
            rewrite(body);
        }
        Term::Call(_, args) => args.iter_mut().for_each(rewrite),
        Term::Path(t, path) => {
            rewrite(t);
            for (part, _) in &mut path.0 {
                match part {
                    Part::Index(i) => rewrite(i),
                    Part::Range(from, to) => {
                        for t in [from, to].into_iter().flatten() {
                            rewrite(t);
                        }
                    }
                }
            }
        }
    }
}

fn rewrite_pattern(pattern: &mut Pattern<&str>) {
    match pattern {
        Pattern::Var(_) => {}
        Pattern::Arr(items) => items.iter_mut().for_each(rewrite_pattern),
        Pattern::Obj(entries) => {
            for (key, inner) in entries {
                rewrite(key);
                rewrite_pattern(inner);
            }
        }
    }
}

/// `__obj` and `__str` for every size the rewrite produces.
pub(crate) fn funs() -> Vec<Fun<Data>> {
    macro_rules! sizes {
        ($($n:literal)*) => {
            vec![$(
                (NAME, filter_args(2 * $n + 1), Native::<Data>::new(object::<$n>)),
                (STR_NAME, filter_args($n + 1), Native::<Data>::new(string::<$n>)),
            )*]
        };
    }
    let funs = sizes!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32);
    debug_assert_eq!(funs.len(), 2 * (MAX_ENTRIES - 1));
    funs
}

fn filter_args(n: usize) -> Box<[Bind]> {
    std::iter::repeat_n(Bind::Fun(()), n).collect()
}

fn object<const N: usize>(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    // Arguments come off last first: the original object, then vn, kn, ..., v1, k1.
    let (original, original_ctx) = cv.0.pop_fun();
    let mut parts = Vec::with_capacity(2 * N);
    for _ in 0..2 * N {
        parts.push(cv.0.pop_fun());
    }
    let mut map = jaq_json::Map::with_capacity_and_hasher(N, Default::default());
    let mut pending = None;
    for (id, ctx) in parts.into_iter().rev() {
        let mut outputs = id.run((ctx, cv.1.clone()));
        let one = match (outputs.next(), outputs.next()) {
            (Some(Ok(one)), None) => one,
            _ => return original.run((original_ctx, cv.1)),
        };
        match pending.take() {
            None => pending = Some(one),
            Some(key) => {
                map.insert(key, one);
            }
        }
    }
    Box::new(std::iter::once(Ok(Val::obj(map))))
}

fn string<const N: usize>(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let (original, original_ctx) = cv.0.pop_fun();
    let mut parts = Vec::with_capacity(N);
    for _ in 0..N {
        parts.push(cv.0.pop_fun());
    }
    let mut text = Vec::new();
    for (id, ctx) in parts.into_iter().rev() {
        let mut outputs = id.run((ctx, cv.1.clone()));
        match (outputs.next(), outputs.next()) {
            (Some(Ok(Val::TStr(part))), None) => text.extend_from_slice(&part),
            _ => return original.run((original_ctx, cv.1)),
        }
    }
    Box::new(std::iter::once(Ok(Val::utf8_str(text))))
}
