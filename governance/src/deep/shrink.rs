//! Shrinking a failing input: members and array items are removed one at a time, largest
//! first, while the document still fails the same way (the caller's test: still valid against
//! its schema, still the same failure), so a finding shows the smallest input that fails.

use serde_json::Value;

/// One step into a document.
#[derive(Debug, Clone)]
enum Step {
    Member(String),
    Item(usize),
}

/// The smallest document reached from `input` by removals that `keeps` accepts, trying at
/// most `budget` candidates.
pub fn shrink(input: &Value, keeps: impl Fn(&Value) -> bool, budget: usize) -> Value {
    let mut best = input.clone();
    let mut tries = 0;
    'improve: loop {
        let mut paths = Vec::new();
        removable(&best, &mut Vec::new(), &mut paths);
        for path in paths {
            if tries >= budget {
                break 'improve;
            }
            tries += 1;
            let mut candidate = best.clone();
            if remove(&mut candidate, &path) && keeps(&candidate) {
                best = candidate;
                continue 'improve;
            }
        }
        break;
    }
    best
}

/// Every member and item path, outermost first.
fn removable(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let children: Vec<(Step, &Value)> = match value {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (Step::Member(k.clone()), v))
            .collect(),
        // Later items first: removing them keeps the earlier items' pointers.
        Value::Array(items) => items
            .iter()
            .enumerate()
            .rev()
            .map(|(i, v)| (Step::Item(i), v))
            .collect(),
        _ => return,
    };
    for (step, _) in &children {
        at.push(step.clone());
        out.push(at.clone());
        at.pop();
    }
    for (step, child) in children {
        at.push(step);
        removable(child, at, out);
        at.pop();
    }
}

/// Removes the node at `path`; false when there is none.
fn remove(value: &mut Value, path: &[Step]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parents {
        node = match (step, node) {
            (Step::Member(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Step::Item(i), Value::Array(items)) => match items.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Step::Member(k), Value::Object(m)) => m.remove(k).is_some(),
        (Step::Item(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_what_the_failure_does_not_need() {
        let input = json!({"a": 1, "b": {"c": [1, 2, -3], "d": "x"}, "e": [4]});
        // "Fails" while some number below zero is left.
        let keeps = |v: &Value| v.to_string().contains('-');
        assert_eq!(shrink(&input, keeps, 1000), json!({"b": {"c": [-3]}}));
        // The budget bounds the work.
        assert_eq!(shrink(&input, keeps, 0), input);
    }
}
