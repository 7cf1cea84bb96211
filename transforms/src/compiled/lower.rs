//! Lowering jaq's parsed terms to [`Op`]s: names resolve to the mapping's and the prelude's
//! definitions, which are inlined, or to builtins; `$` variables get fixed slots. Anything
//! outside the part of jq the compiled form knows makes the whole lowering give up (`None`),
//! and the mapping runs on jaq.

use std::rc::Rc;
use std::sync::LazyLock;

use jaq_core::load::lex::StrPart as TermStrPart;
use jaq_core::load::parse::{BinaryOp, Def, Pattern, Term};
use jaq_core::path::{Opt, Part as PathPart};
use serde_json::{Number, Value};

use super::op::{Builtin, Kind, Op, Part, StrPart};

type T<'s> = Term<&'s str>;

/// How deep definitions may inline into each other; jq's recursion is refused before this.
const MAX_INLINE_DEPTH: usize = 64;

/// The names visible at a point of the program, innermost first.
#[derive(Clone, Default)]
struct Scope<'t, 's>(Option<Rc<Node<'t, 's>>>);

struct Node<'t, 's> {
    entry: Entry<'t, 's>,
    next: Scope<'t, 's>,
}

enum Entry<'t, 's> {
    /// A `$` variable and its slot.
    Var(&'s str, usize),
    /// A definition and the names visible where it was defined; jq's standard definitions
    /// (`std`) give way to a builtin of the same name.
    Def {
        def: &'t Def<&'s str>,
        defined_in: Scope<'t, 's>,
        std: bool,
    },
    /// A filter parameter: the argument's term, lowered where it was passed.
    Closure(&'s str, &'t T<'s>, Scope<'t, 's>),
    /// A definition's own name inside its body: a recursive call, which is not inlined.
    Recursive(&'s str, usize),
    /// A `$` parameter whose argument is pure (see [`pure`]), put in place of each use.
    Pure(&'s str, Rc<Op>),
}

impl<'t, 's> Scope<'t, 's> {
    fn with(&self, entry: Entry<'t, 's>) -> Self {
        Scope(Some(Rc::new(Node {
            entry,
            next: self.clone(),
        })))
    }

    fn entries(&self) -> impl Iterator<Item = &Entry<'t, 's>> {
        let mut at = self.0.as_deref();
        std::iter::from_fn(move || {
            let node = at?;
            at = node.next.0.as_deref();
            Some(&node.entry)
        })
    }
}

/// The lowered main filter and how many variable slots a run needs.
pub(crate) struct Lowered {
    pub(crate) main: Op,
    pub(crate) slots: usize,
}

/// jq's standard definitions, as jaq writes them in jq: what a mapping calls that no builtin
/// implements is inlined from these, so it means exactly what it means in jaq.
static STD_DEFS: LazyLock<Vec<Def<&'static str>>> = LazyLock::new(|| {
    jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .collect()
});

/// Lowers a mapping (`code`, a jq term) with jq's standard definitions and the prelude's in
/// scope.
pub(crate) fn lower(code: &str, prelude: &str) -> Option<Lowered> {
    let defs = jaq_core::load::parse(prelude, |p| p.defs())?;
    let term = jaq_core::load::parse(code, |p| p.term())?;
    let mut scope = Scope::default();
    for def in STD_DEFS.iter() {
        scope = scope.with(Entry::Def {
            def,
            defined_in: scope.clone(),
            std: true,
        });
    }
    for def in &defs {
        scope = scope.with(Entry::Def {
            def,
            defined_in: scope.clone(),
            std: false,
        });
    }
    let mut lowerer = Lowerer { slots: 0, depth: 0 };
    let main = lowerer.term(&term, &scope)?;
    Some(Lowered {
        main,
        slots: lowerer.slots,
    })
}

struct Lowerer {
    slots: usize,
    depth: usize,
}

fn op(kind: Kind) -> Option<Op> {
    Some(Op::new(kind))
}

impl Lowerer {
    fn slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }

    fn boxed<'t, 's>(&mut self, t: &'t T<'s>, scope: &Scope<'t, 's>) -> Option<Box<Op>> {
        self.term(t, scope).map(Box::new)
    }

    fn term<'t, 's>(&mut self, t: &'t T<'s>, scope: &Scope<'t, 's>) -> Option<Op> {
        match t {
            Term::Id => op(Kind::Id),
            Term::Num(text) => op(Kind::Const(Value::Number(integer(text)?))),
            Term::Str(format, parts) => self.string(*format, parts, scope),
            Term::Arr(None) => op(Kind::Arr(None)),
            Term::Arr(Some(inner)) => op(Kind::Arr(Some(self.boxed(inner, scope)?))),
            Term::Obj(entries) => {
                let mut lowered = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    lowered.push(self.entry(key, value.as_ref(), scope)?);
                }
                op(Kind::Obj(lowered))
            }
            Term::Neg(t) => op(Kind::Neg(self.boxed(t, scope)?)),
            Term::BinOp(l, bin, r) => self.binary(l, bin, r, scope),
            Term::Fold(name, xs, Pattern::Var(x), args) if *name == "reduce" && args.len() == 2 => {
                let xs = self.boxed(xs, scope)?;
                let init = self.boxed(&args[0], scope)?;
                let slot = self.slot();
                let update = self.boxed(&args[1], &scope.with(Entry::Var(x, slot)))?;
                op(Kind::Reduce(xs, slot, init, update))
            }
            Term::TryCatch(body, handler) => {
                let body = self.boxed(body, scope)?;
                let handler = match handler {
                    Some(h) => Some(self.boxed(h, scope)?),
                    None => None,
                };
                op(Kind::Try(body, handler))
            }
            Term::IfThenElse(branches, otherwise) => {
                let mut rest = match otherwise {
                    Some(e) => self.term(e, scope)?,
                    None => Op::new(Kind::Id),
                };
                for (cond, then) in branches.iter().rev() {
                    let cond = self.boxed(cond, scope)?;
                    let then = self.boxed(then, scope)?;
                    rest = Op::new(Kind::If(cond, then, Box::new(rest)));
                }
                Some(rest)
            }
            Term::Def(defs, body) => {
                let mut scope = scope.clone();
                for def in defs {
                    scope = scope.with(Entry::Def {
                        def,
                        defined_in: scope.clone(),
                        std: false,
                    });
                }
                self.term(body, &scope)
            }
            Term::Call(name, args) => self.call(name, args, scope),
            Term::Var(x) => scope.entries().find_map(|entry| match entry {
                Entry::Var(name, slot) if name == x => op(Kind::Var(*slot)),
                Entry::Pure(name, value) if name == x => Some((**value).clone()),
                _ => None,
            }),
            Term::Path(t, path) => {
                let t = self.boxed(t, scope)?;
                let mut parts = Vec::with_capacity(path.0.len());
                for (part, opt) in &path.0 {
                    let part = match part {
                        PathPart::Index(i) => Part::Index(self.term(i, scope)?),
                        PathPart::Range(None, None) => Part::Iter,
                        PathPart::Range(..) => return None,
                    };
                    parts.push((part, matches!(opt, Opt::Optional)));
                }
                let t = match (table(&t), parts.first()) {
                    (Some(table), Some((Part::Index(_), _))) => {
                        Box::new(Op::new(Kind::Const(table)))
                    }
                    _ => t,
                };
                op(Kind::Path(t, parts))
            }
            Term::Recurse | Term::Label(..) | Term::Break(_) | Term::Fold(..) => None,
        }
    }

    fn string<'t, 's>(
        &mut self,
        format: Option<&'s str>,
        parts: &'t [TermStrPart<&'s str, T<'s>>],
        scope: &Scope<'t, 's>,
    ) -> Option<Op> {
        let uri = match format {
            None => false,
            Some("@uri") => true,
            Some(_) => return None,
        };
        let mut lowered: Vec<StrPart> = Vec::with_capacity(parts.len());
        for part in parts {
            let literal = match part {
                TermStrPart::Str(s) => s.to_string(),
                TermStrPart::Char(c) => c.to_string(),
                TermStrPart::Term(t) => {
                    lowered.push(StrPart::Op(self.term(t, scope)?));
                    continue;
                }
            };
            match lowered.last_mut() {
                Some(StrPart::Lit(text)) => text.push_str(&literal),
                _ => lowered.push(StrPart::Lit(literal)),
            }
        }
        match lowered.as_slice() {
            [] => op(Kind::Const(Value::String(String::new()))),
            [StrPart::Lit(text)] => op(Kind::Const(Value::String(text.clone()))),
            _ => op(Kind::Str(uri, lowered)),
        }
    }

    fn entry<'t, 's>(
        &mut self,
        key: &'t T<'s>,
        value: Option<&'t T<'s>>,
        scope: &Scope<'t, 's>,
    ) -> Option<(Op, Op)> {
        match (key, value) {
            // `{$x}` is `{x: $x}`.
            (Term::Var(x), None) => {
                let value = self.term(key, scope)?;
                let name = x.strip_prefix('$').unwrap_or(x);
                Some((Op::new(Kind::Const(Value::String(name.to_owned()))), value))
            }
            // `{a}` is `{a: .a}`.
            (key, None) => {
                let key = self.term(key, scope)?;
                let value = Op::new(Kind::Path(
                    Box::new(Op::new(Kind::Id)),
                    vec![(Part::Index(key.clone()), false)],
                ));
                Some((key, value))
            }
            (key, Some(value)) => Some((self.term(key, scope)?, self.term(value, scope)?)),
        }
    }

    fn binary<'t, 's>(
        &mut self,
        l: &'t T<'s>,
        bin: &'t BinaryOp<&'s str>,
        r: &'t T<'s>,
        scope: &Scope<'t, 's>,
    ) -> Option<Op> {
        let kind = match bin {
            BinaryOp::Pipe(None) => Kind::Pipe(self.boxed(l, scope)?, self.boxed(r, scope)?),
            BinaryOp::Pipe(Some(Pattern::Var(x))) => {
                let e = self.boxed(l, scope)?;
                let slot = self.slot();
                let body = self.boxed(r, &scope.with(Entry::Var(x, slot)))?;
                Kind::Bind(e, slot, body)
            }
            BinaryOp::Comma => Kind::Comma(self.boxed(l, scope)?, self.boxed(r, scope)?),
            BinaryOp::Alt => Kind::Alt(self.boxed(l, scope)?, self.boxed(r, scope)?),
            BinaryOp::Or => Kind::Logic(self.boxed(l, scope)?, true, self.boxed(r, scope)?),
            BinaryOp::And => Kind::Logic(self.boxed(l, scope)?, false, self.boxed(r, scope)?),
            BinaryOp::Math(m) => Kind::Math(self.boxed(l, scope)?, *m, self.boxed(r, scope)?),
            BinaryOp::Cmp(c) => Kind::Cmp(self.boxed(l, scope)?, *c, self.boxed(r, scope)?),
            BinaryOp::Update => Kind::Update(self.update_path(l, scope)?, self.boxed(r, scope)?),
            // `p op= r` is `r as $x | p |= . op $x`: the right side reads the whole input.
            BinaryOp::UpdateMath(m) => {
                let value = self.boxed(r, scope)?;
                let path = self.update_path(l, scope)?;
                let slot = self.slot();
                let id = Box::new(Op::new(Kind::Id));
                let var = Box::new(Op::new(Kind::Var(slot)));
                let f = Box::new(Op::new(Kind::Math(id, *m, var)));
                let update = Box::new(Op::new(Kind::Update(path, f)));
                Kind::Bind(value, slot, update)
            }
            // Destructuring, assignments and the other updates stay with jaq.
            BinaryOp::Pipe(Some(_)) | BinaryOp::Assign | BinaryOp::UpdateAlt => return None,
        };
        op(kind)
    }

    /// The keys of an updated path, `.a[f].b`: the only paths the compiled form updates.
    fn update_path<'t, 's>(&mut self, t: &'t T<'s>, scope: &Scope<'t, 's>) -> Option<Vec<Op>> {
        let Term::Path(base, path) = t else {
            return None;
        };
        if !matches!(**base, Term::Id) {
            return None;
        }
        let mut keys = Vec::with_capacity(path.0.len());
        for (part, opt) in &path.0 {
            match (part, opt) {
                (PathPart::Index(i), Opt::Essential) => {
                    let key = self.term(i, scope)?;
                    if !key.single {
                        return None;
                    }
                    keys.push(key);
                }
                _ => return None,
            }
        }
        Some(keys)
    }

    fn call<'t, 's>(
        &mut self,
        name: &'s str,
        args: &'t [T<'s>],
        scope: &Scope<'t, 's>,
    ) -> Option<Op> {
        for entry in scope.entries() {
            match entry {
                Entry::Def {
                    def,
                    defined_in,
                    std,
                } if def.name == name && def.args.len() == args.len() => {
                    if *std && Builtin::resolve(name, args.len()).is_some() {
                        break;
                    }
                    return self.inline(def, defined_in, args, scope);
                }
                Entry::Closure(param, term, passed_in) if *param == name && args.is_empty() => {
                    return self.nested(|l| l.term(term, passed_in));
                }
                Entry::Recursive(def, arity) if *def == name && *arity == args.len() => {
                    return None;
                }
                _ => {}
            }
        }
        let constant = match (name, args.len()) {
            ("null", 0) => Some(Value::Null),
            ("true", 0) => Some(Value::Bool(true)),
            ("false", 0) => Some(Value::Bool(false)),
            _ => None,
        };
        if let Some(value) = constant {
            return op(Kind::Const(value));
        }
        let builtin = Builtin::resolve(name, args.len())?;
        let mut lowered = Vec::with_capacity(args.len());
        for arg in args {
            lowered.push(self.term(arg, scope)?);
        }
        // jq runs `gsub`'s replacement on each match's captures; only a fixed text is taken.
        if builtin == Builtin::Gsub && !matches!(lowered[1].kind, Kind::Const(Value::String(_))) {
            return None;
        }
        op(Kind::Call(builtin, lowered))
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self) -> Option<Op>) -> Option<Op> {
        if self.depth >= MAX_INLINE_DEPTH {
            return None;
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// A call of a definition: its body in the scope it was defined in, with its `$`
    /// parameters bound (the first outermost, as jq does) and its filter parameters standing
    /// for the arguments as the caller wrote them.
    fn inline<'t, 's>(
        &mut self,
        def: &'t Def<&'s str>,
        defined_in: &Scope<'t, 's>,
        args: &'t [T<'s>],
        caller: &Scope<'t, 's>,
    ) -> Option<Op> {
        self.nested(|l| {
            let mut scope = defined_in.with(Entry::Recursive(def.name, def.args.len()));
            let mut binds = Vec::new();
            for (param, arg) in def.args.iter().zip(args) {
                if let Some(filter_name) = param.strip_prefix('$') {
                    let value = l.term(arg, caller)?;
                    scope = scope.with(Entry::Closure(filter_name, arg, caller.clone()));
                    if pure(&value) {
                        // Computed where it is used, if it is: `required(f; "missing \($x)")`
                        // formats its message only when it rejects.
                        scope = scope.with(Entry::Pure(param, Rc::new(value)));
                    } else {
                        let slot = l.slot();
                        binds.push((value, slot));
                        scope = scope.with(Entry::Var(param, slot));
                    }
                } else {
                    scope = scope.with(Entry::Closure(param, arg, caller.clone()));
                }
            }
            let mut body = l.term(&def.body, &scope)?;
            for (value, slot) in binds.into_iter().rev() {
                body = Op::new(Kind::Bind(Box::new(value), slot, Box::new(body)));
            }
            Some(body)
        })
    }
}

/// Whether an argument can stand in for its `$` parameter at each use instead of being bound
/// once: it reads no input and raises no error (a string of constants and variables can at
/// worst leave the run to jaq), so computing it zero or several times changes nothing but the
/// cost. The variables it reads keep their values while the definition runs: definitions are
/// inlined, never recursive.
fn pure(op: &Op) -> bool {
    match &op.kind {
        Kind::Const(_) | Kind::Var(_) => true,
        Kind::Str(_, parts) => parts.iter().all(|part| match part {
            StrPart::Lit(_) => true,
            StrPart::Op(op) => matches!(op.kind, Kind::Const(_) | Kind::Var(_)),
        }),
        _ => false,
    }
}

/// A lookup table, `{"AFN": "marketplace", "MFN": "merchant"}[.x]`: an object of constant
/// keys and scalar values only ever indexed, built once instead of on every run. (Iterating
/// it would give its members in key order, not in jaq's order of construction; indexing
/// does not see the order, and a scalar member has none.)
fn table(t: &Op) -> Option<Value> {
    let Kind::Obj(entries) = &t.kind else {
        return None;
    };
    let mut map = serde_json::Map::new();
    for (k, v) in entries {
        match (&k.kind, &v.kind) {
            (Kind::Const(Value::String(key)), Kind::Const(value))
                if !value.is_object() && !value.is_array() =>
            {
                map.insert(key.clone(), value.clone());
            }
            _ => return None,
        }
    }
    Some(Value::Object(map))
}

/// An integer literal as the number jaq makes of it; other literals stay with jaq, whose
/// floating-point arithmetic the compiled form does not copy.
fn integer(text: &str) -> Option<Number> {
    text.parse::<i64>().ok().map(Number::from)
}
