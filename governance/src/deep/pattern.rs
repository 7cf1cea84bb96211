//! Strings matching a `pattern`: the regex is parsed once (`regex-syntax`) and walked with the
//! generator's random source, so the same seed gives the same strings.

use rand::Rng;
use regex_syntax::hir::{Class, Hir, HirKind};

/// How many repetitions an unbounded `*`, `+` or `{n,}` adds at most beyond its minimum.
const UNBOUNDED_EXTRA: u32 = 4;

/// A parsed `pattern`.
#[derive(Debug, Clone)]
pub struct Pattern {
    hir: Hir,
}

impl Pattern {
    /// Parses a JSON Schema `pattern` (ECMA-262 syntax; the subset `regex-syntax` shares with
    /// it, which covers classes, groups, alternation, repetition and anchors).
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .map(|hir| Pattern { hir })
            .map_err(|e| e.to_string())
    }

    /// The shortest match the leftmost choices give: minimum repetitions, the first
    /// alternative, the lowest character of each class.
    pub fn shortest(&self) -> String {
        let mut out = String::new();
        walk(
            &self.hir,
            &mut Choice::<rand_chacha::ChaCha8Rng>::First,
            &mut out,
        );
        out
    }

    /// A random match: random alternatives, repetition counts and characters.
    pub fn random<R: Rng>(&self, rng: &mut R) -> String {
        let mut out = String::new();
        walk(&self.hir, &mut Choice::Random(rng), &mut out);
        out
    }
}

/// How the walk decides: always the first/smallest choice, or at random.
enum Choice<'r, R> {
    First,
    Random(&'r mut R),
}

impl<R: Rng> Choice<'_, R> {
    /// An index below `n` (n > 0).
    fn index(&mut self, n: usize) -> usize {
        match self {
            Choice::First => 0,
            Choice::Random(rng) => rng.random_range(0..n),
        }
    }

    /// A repetition count in `min..=max`.
    fn count(&mut self, min: u32, max: u32) -> u32 {
        match self {
            Choice::First => min,
            Choice::Random(rng) => {
                // The bounds themselves are the interesting lengths; pick them often.
                match rng.random_range(0..4) {
                    0 => min,
                    1 => max,
                    _ => rng.random_range(min..=max),
                }
            }
        }
    }

    /// A code point offset below `n` (n > 0).
    fn offset(&mut self, n: u32) -> u32 {
        match self {
            Choice::First => 0,
            Choice::Random(rng) => rng.random_range(0..n),
        }
    }
}

fn walk<R: Rng>(hir: &Hir, choice: &mut Choice<'_, R>, out: &mut String) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => out.push_str(&String::from_utf8_lossy(&lit.0)),
        HirKind::Class(Class::Unicode(class)) => {
            let ranges = class.ranges();
            if ranges.is_empty() {
                return;
            }
            let range = &ranges[choice.index(ranges.len())];
            let (lo, hi) = (u32::from(range.start()), u32::from(range.end()));
            // Surrogates are no chars: retry downwards to the start, which always is one.
            let mut code = lo + choice.offset(hi - lo + 1);
            while char::from_u32(code).is_none() && code > lo {
                code -= 1;
            }
            out.push(char::from_u32(code).unwrap_or(range.start()));
        }
        HirKind::Class(Class::Bytes(class)) => {
            let ascii: Vec<_> = class.ranges().iter().filter(|r| r.start() < 0x80).collect();
            if ascii.is_empty() {
                return;
            }
            let range = ascii[choice.index(ascii.len())];
            let hi = range.end().min(0x7f);
            let code = range.start() + choice.offset(u32::from(hi - range.start()) + 1) as u8;
            out.push(char::from(code));
        }
        HirKind::Repetition(rep) => {
            let max = rep.max.unwrap_or(rep.min.saturating_add(UNBOUNDED_EXTRA));
            let n = choice.count(rep.min, max.max(rep.min));
            for _ in 0..n {
                walk(&rep.sub, choice, out);
            }
        }
        HirKind::Capture(cap) => walk(&cap.sub, choice, out),
        HirKind::Concat(subs) => {
            for sub in subs {
                walk(sub, choice, out);
            }
        }
        HirKind::Alternation(subs) => {
            if !subs.is_empty() {
                walk(&subs[choice.index(subs.len())], choice, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_and_shortest_strings_match_their_pattern() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for p in [
            "^[0-9]{3}-[0-9]{7}-[0-9]{7}$",
            "^$|^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$",
            "^-?[0-9]+(\\.[0-9]+)?$",
            "^[A-Z]{2,3}$",
            "^[1-9][0-9]*$",
            "caf\u{e9}|[^a-z]+",
        ] {
            let re = regex::Regex::new(p).expect("pattern");
            let parsed = Pattern::parse(p).expect("parses");
            assert!(
                re.is_match(&parsed.shortest()),
                "{p}: {:?}",
                parsed.shortest()
            );
            for _ in 0..200 {
                let s = parsed.random(&mut rng);
                assert!(re.is_match(&s), "{p}: {s:?}");
            }
        }
    }
}
