//! The operations a mapping is lowered to: jq's terms with names resolved, definitions
//! inlined and variables given fixed slots, so that running one is a walk over this tree.

use jaq_core::ops::{Cmp, Math};
use serde_json::Value;

/// One operation, and whether it always gives exactly one output (or an error): such
/// operations run without the generator machinery, which is most of a mapping.
#[derive(Clone)]
pub(crate) struct Op {
    pub(crate) kind: Kind,
    pub(crate) single: bool,
}

#[derive(Clone)]
pub(crate) enum Kind {
    /// `.`
    Id,
    /// A literal.
    Const(Value),
    /// `$x`, by slot.
    Var(usize),
    /// `t.a[f][]`: the parts apply in turn; each index is computed on the path's input.
    Path(Box<Op>, Vec<(Part, bool)>),
    /// `l | r`
    Pipe(Box<Op>, Box<Op>),
    /// `e as $x | body`
    Bind(Box<Op>, usize, Box<Op>),
    /// `l, r`
    Comma(Box<Op>, Box<Op>),
    /// `l // r`
    Alt(Box<Op>, Box<Op>),
    /// `l or r` (true) and `l and r` (false).
    Logic(Box<Op>, bool, Box<Op>),
    Math(Box<Op>, Math, Box<Op>),
    Cmp(Box<Op>, Cmp, Box<Op>),
    Neg(Box<Op>),
    /// `if c then t else e end`; `elif` chains nest in `e`.
    If(Box<Op>, Box<Op>, Box<Op>),
    /// `[f]`, `[]` when empty.
    Arr(Option<Box<Op>>),
    /// `{k: v, ...}`
    Obj(Vec<(Op, Op)>),
    /// A string with interpolations; `@uri "..."` encodes the interpolated parts.
    Str(bool, Vec<StrPart>),
    /// `try body catch handler`, `body?`
    Try(Box<Op>, Option<Box<Op>>),
    /// `reduce xs as $x (init; update)`
    Reduce(Box<Op>, usize, Box<Op>, Box<Op>),
    /// A function written in Rust, with its arguments.
    Call(Builtin, Vec<Op>),
    /// `.a[k] |= f`: the keys, computed on the input, and `f`.
    Update(Vec<Op>, Box<Op>),
}

#[derive(Clone)]
pub(crate) enum Part {
    /// `[f]`, `.a`
    Index(Op),
    /// `[]`
    Iter,
}

#[derive(Clone)]
pub(crate) enum StrPart {
    Lit(String),
    Op(Op),
}

impl Op {
    pub(crate) fn new(kind: Kind) -> Op {
        let single = match &kind {
            Kind::Id | Kind::Const(_) | Kind::Var(_) | Kind::Arr(_) => true,
            Kind::Path(t, parts) => {
                t.single
                    && parts.iter().all(|(part, optional)| {
                        !optional && matches!(part, Part::Index(i) if i.single)
                    })
            }
            Kind::Pipe(l, r) | Kind::Bind(l, _, r) | Kind::Alt(l, r) | Kind::Logic(l, _, r) => {
                l.single && r.single
            }
            Kind::Math(l, _, r) | Kind::Cmp(l, _, r) => l.single && r.single,
            Kind::Comma(..) | Kind::Try(..) => false,
            Kind::Neg(t) => t.single,
            Kind::If(c, t, e) => c.single && t.single && e.single,
            Kind::Obj(entries) => entries.iter().all(|(k, v)| k.single && v.single),
            Kind::Str(_, parts) => parts.iter().all(|p| match p {
                StrPart::Lit(_) => true,
                StrPart::Op(op) => op.single,
            }),
            Kind::Reduce(_, _, init, update) => init.single && update.single,
            Kind::Update(keys, f) => keys.iter().all(|k| k.single) && f.single,
            Kind::Call(builtin, args) => {
                builtin.single() && (builtin.takes_filters() || args.iter().all(|a| a.single))
            }
        };
        Op { kind, single }
    }
}

/// The functions the compiled form runs natively: jq's standard ones that mappings use, and
/// ours (see `natives`), with the same meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    // Run by the evaluator itself: generators, and builtins taking filters.
    Empty,
    Values,
    Select,
    Map,
    First,
    Range,
    // Of the input and value arguments.
    Error,
    Length,
    Type,
    Not,
    ToString,
    AsciiDowncase,
    AsciiUpcase,
    StartsWith,
    EndsWith,
    Has,
    Join,
    Add,
    Uri,
    ToJson,
    Unique,
    Test,
    Gsub,
    Decimal,
    DecimalAdd,
    DecimalSub,
    DecimalMul,
    DecimalNeg,
    DecimalAbs,
    DecimalSum,
    MoneyAmount,
    Money,
    Compact,
    Blank,
    NonEmpty,
    IdString,
    ToInt,
    EpochMsToRfc3339,
    ToUtc,
    ToEpochMs,
    ToUtcMs,
    IdNumber,
    StableNumber,
    CountryAlpha2,
    StatusRollup,
}

impl Builtin {
    /// The builtin a call to `name` with `arity` arguments means, when no definition of the
    /// mapping or the prelude has that name.
    pub(crate) fn resolve(name: &str, arity: usize) -> Option<Builtin> {
        use Builtin::*;
        Some(match (name, arity) {
            ("empty", 0) => Empty,
            ("values", 0) => Values,
            ("select", 1) => Select,
            ("map", 1) => Map,
            ("first", 1) => First,
            ("range", 1) => Range,
            ("tojson", 0) => ToJson,
            ("unique", 0) => Unique,
            ("test", 1) => Test,
            ("gsub", 2) => Gsub,
            ("error", 1) => Error,
            ("length", 0) => Length,
            ("type", 0) => Type,
            ("not", 0) => Not,
            ("tostring", 0) => ToString,
            ("ascii_downcase", 0) => AsciiDowncase,
            ("ascii_upcase", 0) => AsciiUpcase,
            ("startswith", 1) => StartsWith,
            ("endswith", 1) => EndsWith,
            ("has", 1) => Has,
            ("join", 1) => Join,
            ("add", 0) => Add,
            ("@uri", 0) => Uri,
            ("decimal", 0) => Decimal,
            ("decimal_add", 2) => DecimalAdd,
            ("decimal_sub", 2) => DecimalSub,
            ("decimal_mul", 2) => DecimalMul,
            ("decimal_neg", 0) => DecimalNeg,
            ("decimal_abs", 0) => DecimalAbs,
            ("decimal_sum", 0) => DecimalSum,
            ("money_amount", 1) => MoneyAmount,
            ("money", 1) => Money,
            ("compact", 0) => Compact,
            ("blank", 0) => Blank,
            ("nonempty", 0) => NonEmpty,
            ("id_string", 0) => IdString,
            ("to_int", 0) => ToInt,
            ("epoch_ms_to_rfc3339", 0) => EpochMsToRfc3339,
            ("to_utc", 0) => ToUtc,
            ("to_epoch_ms", 0) => ToEpochMs,
            ("to_utc_ms", 0) => ToUtcMs,
            ("id_number", 0) => IdNumber,
            ("stable_number", 0) => StableNumber,
            ("country_alpha2", 0) => CountryAlpha2,
            ("status_rollup", 0) => StatusRollup,
            _ => return None,
        })
    }

    /// Whether a call gives exactly one output (or an error) when its arguments do.
    fn single(self) -> bool {
        !matches!(
            self,
            Builtin::Empty | Builtin::Values | Builtin::Select | Builtin::First | Builtin::Range
        )
    }

    /// Whether the arguments are filters the builtin runs itself, rather than values it
    /// receives (one call per combination of their outputs, like jq's `$` parameters).
    pub(crate) fn takes_filters(self) -> bool {
        matches!(self, Builtin::Select | Builtin::Map | Builtin::First)
    }
}
