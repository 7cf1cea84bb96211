//! Running lowered operations on a document. An operation that gives one output is computed
//! directly ([`Runner::one`]); generators call a continuation for each output
//! ([`Runner::each`]), in jq's order, without boxing iterators.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::builtins;
use super::op::{Builtin, Kind, Op, Part, StrPart};
use super::value::{self, NULL, R, Stop, V, boolean, truthy};
use typed_arena::Arena;

/// What receives each output of a generator.
type Out<'o, 'a> = &'o mut dyn FnMut(&mut Runner<'a>, V<'a>) -> R;

/// The state of one run: the values of the `$` variables, and an arena for the values built
/// during the run that more than one operation reads.
pub(crate) struct Runner<'a> {
    slots: Vec<V<'a>>,
    arena: &'a Arena<Value>,
}

/// The input an operation is given when it does not read it.
fn unread<'a>() -> V<'a> {
    Cow::Borrowed(&NULL)
}

/// `input` for an operation that reads it; a constant or a variable does not, and an owned
/// input is not copied for them. (Generators share their input first, so this copies no
/// more than a pointer there.)
fn input_of<'a>(op: &Op, input: &V<'a>) -> V<'a> {
    if reads_input(op) {
        input.clone()
    } else {
        unread()
    }
}

fn reads_input(op: &Op) -> bool {
    !matches!(op.kind, Kind::Const(_) | Kind::Var(_))
}

impl<'a> Runner<'a> {
    pub(crate) fn new(slots: usize, arena: &'a Arena<Value>) -> Runner<'a> {
        Runner {
            slots: vec![unread(); slots],
            arena,
        }
    }

    /// A value several operations read: one built during the run moves into the arena once,
    /// and each reader borrows it, where each would otherwise take a deep copy.
    fn shared(&self, v: V<'a>) -> V<'a> {
        match v {
            Cow::Owned(v) => Cow::Borrowed(self.arena.alloc(v)),
            borrowed => borrowed,
        }
    }

    /// `input` for `op`, when `input` is read again after it: shared (see [`Runner::shared`]).
    fn input_for(&self, op: &Op, input: &mut V<'a>) -> V<'a> {
        if reads_input(op) && matches!(input, Cow::Owned(_)) {
            *input = self.shared(std::mem::replace(input, unread()));
        }
        input_of(op, input)
    }

    /// The one output of a `single` operation.
    pub(crate) fn one(&mut self, op: &'a Op, mut input: V<'a>) -> R<V<'a>> {
        debug_assert!(op.single);
        match &op.kind {
            Kind::Id => Ok(input),
            Kind::Const(v) => Ok(Cow::Borrowed(v)),
            Kind::Var(slot) => Ok(self.slots[*slot].clone()),
            Kind::Path(t, parts) => {
                // Keys are computed on the path's input; most are constants (`.a.b`), which
                // need neither the input nor a copy of it.
                let keys_input = parts
                    .iter()
                    .any(|(part, _)| matches!(part, Part::Index(i) if !matches!(i.kind, Kind::Const(_))))
                    .then(|| {
                        input = self.shared(std::mem::replace(&mut input, unread()));
                        input.clone()
                    });
                let mut v = self.one(t, input)?;
                for (part, _) in parts {
                    let Part::Index(i) = part else {
                        return Err(Stop::Fallback);
                    };
                    v = match (&i.kind, &keys_input) {
                        (Kind::Const(key), _) => value::index(v, key)?,
                        (_, Some(keys_input)) => {
                            let key = self.one(i, keys_input.clone())?;
                            value::index(v, &key)?
                        }
                        (_, None) => return Err(Stop::Fallback),
                    };
                }
                Ok(v)
            }
            Kind::Pipe(l, r) => {
                let x = self.one(l, input)?;
                self.one(r, x)
            }
            Kind::Bind(e, slot, body) => {
                let x = self.one(e, self.input_for(e, &mut input))?;
                self.slots[*slot] = self.shared(x);
                self.one(body, input)
            }
            Kind::Alt(l, r) => {
                let x = self.one(l, self.input_for(l, &mut input))?;
                if truthy(&x) {
                    Ok(x)
                } else {
                    self.one(r, input)
                }
            }
            Kind::Logic(l, or, r) => {
                let x = self.one(l, self.input_for(l, &mut input))?;
                if truthy(&x) == *or {
                    return Ok(boolean(*or));
                }
                let y = self.one(r, input)?;
                Ok(boolean(truthy(&y)))
            }
            Kind::Math(l, m, r) => {
                let x = self.one(l, self.input_for(l, &mut input))?;
                let y = self.one(r, input)?;
                value::math(*m, x, y)
            }
            Kind::Cmp(l, c, r) => {
                let x = self.one(l, self.input_for(l, &mut input))?;
                let y = self.one(r, input)?;
                value::compare(*c, &x, &y).map(boolean)
            }
            Kind::Neg(t) => {
                let x = self.one(t, input)?;
                match value::as_int(&x).and_then(i64::checked_neg) {
                    Some(n) => Ok(value::int(n)),
                    None if x.is_number() => Err(Stop::Fallback),
                    None => Err(Stop::Opaque),
                }
            }
            Kind::If(c, t, e) => {
                let cond = self.one(c, self.input_for(c, &mut input))?;
                self.one(if truthy(&cond) { t } else { e }, input)
            }
            Kind::Arr(None) => Ok(Cow::Owned(Value::Array(Vec::new()))),
            Kind::Arr(Some(f)) => self.array(f, input),
            Kind::Obj(entries) => self.object(entries, input),
            Kind::Str(uri, parts) => self.text(*uri, parts, input),
            Kind::Reduce(xs, slot, init, update) => self.reduce(xs, *slot, init, update, input),
            Kind::Call(Builtin::Map, args) => self.map(args, input),
            Kind::Call(builtin, args) => self.call(*builtin, args, input),
            Kind::Update(keys, f) => self.update_at(keys, f, input),
            Kind::Comma(..) | Kind::Try(..) => Err(Stop::Fallback),
        }
    }

    // The operations below are kept out of `one`, which every operation goes through, so
    // that its frame stays small.

    #[inline(never)]
    fn array(&mut self, f: &'a Op, input: V<'a>) -> R<V<'a>> {
        let mut items = Vec::new();
        self.each(f, input, &mut |_, v| {
            items.push(value::owned(v));
            Ok(())
        })?;
        Ok(Cow::Owned(Value::Array(items)))
    }

    #[inline(never)]
    fn object(&mut self, entries: &'a [(Op, Op)], mut input: V<'a>) -> R<V<'a>> {
        let mut map = Map::new();
        for (k, v) in entries {
            let key = match self.one(k, self.input_for(k, &mut input))? {
                Cow::Owned(Value::String(key)) => key,
                Cow::Borrowed(Value::String(key)) => key.clone(),
                // jaq allows any key and then fails to make JSON of it.
                _ => return Err(Stop::Fallback),
            };
            let value = self.one(v, self.input_for(v, &mut input))?;
            map.insert(key, value::owned(value));
        }
        Ok(Cow::Owned(Value::Object(map)))
    }

    #[inline(never)]
    fn text(&mut self, uri: bool, parts: &'a [StrPart], mut input: V<'a>) -> R<V<'a>> {
        let mut text = String::with_capacity(32);
        for part in parts {
            match part {
                StrPart::Lit(lit) => text.push_str(lit),
                StrPart::Op(op) => {
                    let v = self.one(op, self.input_for(op, &mut input))?;
                    if uri {
                        value::write_uri(&v, &mut text)?;
                    } else {
                        value::write_text(&v, &mut text)?;
                    }
                }
            }
        }
        Ok(value::string(text))
    }

    #[inline(never)]
    fn reduce(
        &mut self,
        xs: &'a Op,
        slot: usize,
        init: &'a Op,
        update: &'a Op,
        mut input: V<'a>,
    ) -> R<V<'a>> {
        let mut acc = Some(self.one(init, self.input_for(init, &mut input))?);
        self.each(xs, input, &mut |rt, x| {
            rt.slots[slot] = rt.shared(x);
            let current = acc.take().ok_or(Stop::Fallback)?;
            acc = Some(rt.one(update, current)?);
            Ok(())
        })?;
        acc.ok_or(Stop::Fallback)
    }

    #[inline(never)]
    fn map(&mut self, args: &'a [Op], input: V<'a>) -> R<V<'a>> {
        let [f] = args else {
            return Err(Stop::Fallback);
        };
        let mut items = Vec::new();
        value::iterate(input, |item| {
            self.each(f, item, &mut |_, v| {
                items.push(value::owned(v));
                Ok(())
            })
        })?;
        Ok(Cow::Owned(Value::Array(items)))
    }

    /// A builtin on value arguments; most take at most two, which need no vector.
    #[inline(never)]
    fn call(&mut self, builtin: Builtin, args: &'a [Op], mut input: V<'a>) -> R<V<'a>> {
        match args {
            [] => builtins::call(builtin, input, &[]),
            [a] => {
                let a = self.one(a, self.input_for(a, &mut input))?;
                builtins::call(builtin, input, &[a])
            }
            [a, b] => {
                let a = self.one(a, self.input_for(a, &mut input))?;
                let b = self.one(b, self.input_for(b, &mut input))?;
                builtins::call(builtin, input, &[a, b])
            }
            _ => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.one(arg, self.input_for(arg, &mut input))?);
                }
                builtins::call(builtin, input, &values)
            }
        }
    }

    #[inline(never)]
    fn update_at(&mut self, keys: &'a [Op], f: &'a Op, mut input: V<'a>) -> R<V<'a>> {
        let mut at = Vec::with_capacity(keys.len());
        for key in keys {
            at.push(value::owned(
                self.one(key, self.input_for(key, &mut input))?,
            ));
        }
        let mut doc = value::owned(input);
        self.update(&mut doc, &at, f)?;
        Ok(Cow::Owned(doc))
    }

    /// Replaces the value at `keys` in `doc` by `f` of it; a missing member is created, from
    /// null as jq does.
    fn update(&mut self, doc: &mut Value, keys: &[Value], f: &'a Op) -> R {
        let Some((key, rest)) = keys.split_first() else {
            let current = std::mem::take(doc);
            *doc = value::owned(self.one(f, Cow::Owned(current))?);
            return Ok(());
        };
        if doc.is_null()
            && let Value::String(_) = key
        {
            *doc = Value::Object(Map::new());
        }
        match (doc, key) {
            (Value::Object(map), Value::String(k)) => {
                let child = map.entry(k.clone()).or_insert(Value::Null);
                self.update(child, rest, f)
            }
            (Value::Array(items), Value::Number(n)) => {
                let i = n.as_i64().ok_or(Stop::Fallback)?;
                let at = if i < 0 { i + items.len() as i64 } else { i };
                match usize::try_from(at).ok().and_then(|at| items.get_mut(at)) {
                    Some(child) => self.update(child, rest, f),
                    // jq pads with nulls or refuses; left to jaq.
                    None => Err(Stop::Fallback),
                }
            }
            _ => Err(Stop::Fallback),
        }
    }

    /// Every output of `op`, in order, to `out`.
    pub(crate) fn each(&mut self, op: &'a Op, input: V<'a>, out: Out<'_, 'a>) -> R {
        if op.single {
            let v = self.one(op, input)?;
            return out(self, v);
        }
        // What follows reads its input more than once, mostly.
        let input = match op.kind {
            Kind::Pipe(..) | Kind::Try(..) => input,
            _ => self.shared(input),
        };
        match &op.kind {
            Kind::Path(t, parts) => {
                let path_input = input.clone();
                self.each(t, input, &mut |rt, v| rt.parts(v, parts, &path_input, out))
            }
            Kind::Pipe(l, r) => self.each(l, input, &mut |rt, x| rt.each(r, x, out)),
            Kind::Bind(e, slot, body) => {
                let body_input = input.clone();
                self.each(e, input, &mut |rt, x| {
                    rt.slots[*slot] = rt.shared(x);
                    rt.each(body, body_input.clone(), out)
                })
            }
            Kind::Comma(l, r) => {
                self.each(l, input.clone(), out)?;
                self.each(r, input, out)
            }
            Kind::Alt(l, r) => {
                let mut any = false;
                self.each(l, input.clone(), &mut |rt, v| {
                    if truthy(&v) {
                        any = true;
                        out(rt, v)
                    } else {
                        Ok(())
                    }
                })?;
                if any {
                    Ok(())
                } else {
                    self.each(r, input, out)
                }
            }
            Kind::Logic(l, or, r) => {
                let right_input = input.clone();
                self.each(l, input, &mut |rt, x| {
                    if truthy(&x) == *or {
                        out(rt, boolean(*or))
                    } else {
                        rt.each(r, right_input.clone(), &mut |rt, y| {
                            out(rt, boolean(truthy(&y)))
                        })
                    }
                })
            }
            Kind::Math(l, m, r) => {
                let right_input = input.clone();
                self.each(l, input, &mut |rt, x| {
                    rt.each(r, right_input.clone(), &mut |rt, y| {
                        let z = value::math(*m, x.clone(), y)?;
                        out(rt, z)
                    })
                })
            }
            Kind::Cmp(l, c, r) => {
                let right_input = input.clone();
                self.each(l, input, &mut |rt, x| {
                    rt.each(r, right_input.clone(), &mut |rt, y| {
                        let z = value::compare(*c, &x, &y)?;
                        out(rt, boolean(z))
                    })
                })
            }
            Kind::If(c, t, e) => {
                let branch_input = input.clone();
                self.each(c, input, &mut |rt, cond| {
                    rt.each(if truthy(&cond) { t } else { e }, branch_input.clone(), out)
                })
            }
            Kind::Try(body, handler) => {
                let result = self.each(body, input, &mut |rt, v| {
                    out(rt, v).map_err(|stop| Stop::Downstream(Box::new(stop)))
                });
                match result {
                    Ok(()) => Ok(()),
                    Err(Stop::Downstream(stop)) => Err(*stop),
                    Err(Stop::Error(error)) => match handler {
                        Some(h) => self.each(h, Cow::Owned(error), out),
                        None => Ok(()),
                    },
                    // The handler would read jaq's message.
                    Err(Stop::Opaque) if handler.is_some() => Err(Stop::Fallback),
                    Err(Stop::Opaque) => Ok(()),
                    Err(other) => Err(other),
                }
            }
            Kind::Call(Builtin::Empty, _) => Ok(()),
            Kind::Call(Builtin::Range, args) => {
                let [n] = args.as_slice() else {
                    return Err(Stop::Fallback);
                };
                if !n.single {
                    return Err(Stop::Fallback);
                }
                let n = value::as_int(&*self.one(n, input)?).ok_or(Stop::Fallback)?;
                for i in 0..n.max(0) {
                    out(self, value::int(i))?;
                }
                Ok(())
            }
            Kind::Call(Builtin::Values, _) => {
                if input.is_null() {
                    Ok(())
                } else {
                    out(self, input)
                }
            }
            Kind::Call(Builtin::Select, args) => {
                let [f] = args.as_slice() else {
                    return Err(Stop::Fallback);
                };
                let selected = input.clone();
                self.each(f, input, &mut |rt, cond| {
                    if truthy(&cond) {
                        out(rt, selected.clone())
                    } else {
                        Ok(())
                    }
                })
            }
            Kind::Call(Builtin::First, args) => {
                let [f] = args.as_slice() else {
                    return Err(Stop::Fallback);
                };
                let mut first = None;
                match self.each(f, input, &mut |_, v| {
                    first = Some(v);
                    Err(Stop::Done)
                }) {
                    Ok(()) | Err(Stop::Done) => {}
                    Err(other) => return Err(other),
                }
                match first {
                    Some(v) => out(self, v),
                    None => Ok(()),
                }
            }
            Kind::Obj(entries) => self.entries(entries, Map::new(), &input, out),
            Kind::Str(uri, parts) => self.parts_text(*uri, parts, String::new(), &input, out),
            Kind::Call(builtin, args) if !builtin.takes_filters() => {
                self.arguments(*builtin, args, Vec::with_capacity(args.len()), &input, out)
            }
            _ => Err(Stop::Fallback),
        }
    }

    /// An object whose entries give several outputs or none: one object per combination,
    /// the first entry varying slowest, as jaq's sum of one-entry objects does.
    fn entries(
        &mut self,
        entries: &'a [(Op, Op)],
        map: Map<String, Value>,
        input: &V<'a>,
        out: Out<'_, 'a>,
    ) -> R {
        let Some(((k, v), rest)) = entries.split_first() else {
            return out(self, Cow::Owned(Value::Object(map)));
        };
        self.each(k, input_of(k, input), &mut |rt, key| {
            let key = match key {
                Cow::Owned(Value::String(key)) => key,
                Cow::Borrowed(Value::String(key)) => key.clone(),
                _ => return Err(Stop::Fallback),
            };
            rt.each(v, input_of(v, input), &mut |rt, value| {
                let mut map = map.clone();
                map.insert(key.clone(), value::owned(value));
                rt.entries(rest, map, input, out)
            })
        })
    }

    /// A string whose interpolations give several outputs or none, one per combination.
    fn parts_text(
        &mut self,
        uri: bool,
        parts: &'a [StrPart],
        text: String,
        input: &V<'a>,
        out: Out<'_, 'a>,
    ) -> R {
        let Some((part, rest)) = parts.split_first() else {
            return out(self, value::string(text));
        };
        match part {
            StrPart::Lit(lit) => {
                let mut text = text;
                text.push_str(lit);
                self.parts_text(uri, rest, text, input, out)
            }
            StrPart::Op(op) => self.each(op, input_of(op, input), &mut |rt, v| {
                let mut text = text.clone();
                if uri {
                    value::write_uri(&v, &mut text)?;
                } else {
                    value::write_text(&v, &mut text)?;
                }
                rt.parts_text(uri, rest, text, input, out)
            }),
        }
    }

    /// A builtin whose value arguments give several outputs or none: one call per
    /// combination, the first argument varying slowest (jq's `$` parameters).
    fn arguments(
        &mut self,
        builtin: Builtin,
        args: &'a [Op],
        values: Vec<V<'a>>,
        input: &V<'a>,
        out: Out<'_, 'a>,
    ) -> R {
        let Some((arg, rest)) = args.split_first() else {
            let result = builtins::call(builtin, input.clone(), &values)?;
            return out(self, result);
        };
        self.each(arg, input_of(arg, input), &mut |rt, v| {
            let mut values = values.clone();
            values.push(v);
            rt.arguments(builtin, rest, values, input, out)
        })
    }

    /// The path's parts from `at` on, applied to `v`; indices are computed on `input`.
    fn parts(&mut self, v: V<'a>, parts: &'a [(Part, bool)], input: &V<'a>, out: Out<'_, 'a>) -> R {
        let Some(((part, optional), rest)) = parts.split_first() else {
            return out(self, v);
        };
        let swallow = |stop: Stop| match stop {
            Stop::Opaque if *optional => Ok(()),
            other => Err(other),
        };
        match part {
            Part::Iter => {
                let mut items = Vec::new();
                // Collected first, so that an error of the iteration itself is told apart
                // from one of what follows it (which `?` must not swallow).
                match value::iterate(v, |item| {
                    items.push(item);
                    Ok(())
                }) {
                    Ok(()) => {}
                    Err(stop) => return swallow(stop),
                }
                for item in items {
                    self.parts(item, rest, input, out)?;
                }
                Ok(())
            }
            Part::Index(i) => {
                let mut keys = Vec::new();
                let computed = self.each(i, input_of(i, input), &mut |_, key| {
                    keys.push(key);
                    Ok(())
                });
                match computed {
                    Ok(()) => {}
                    // Whether `?` also covers the index's own errors is not copied here.
                    Err(Stop::Opaque | Stop::Error(_)) if *optional => return Err(Stop::Fallback),
                    Err(stop) => return Err(stop),
                }
                for key in keys {
                    match value::index(v.clone(), &key) {
                        Ok(x) => self.parts(x, rest, input, out)?,
                        Err(stop) => swallow(stop)?,
                    }
                }
                Ok(())
            }
        }
    }
}
