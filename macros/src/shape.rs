//! Shape rules: comparing dims, broadcasting, and the shape each op produces. Pure functions
//! over the IR's symbolic shapes; callers turn failures into spanned errors.

use crate::ir::{Dim, DimAssertion, DimKind, Shape};

/// What the macro can tell about two dims.
#[derive(Debug, PartialEq, Eq)]
pub enum Comparison {
    Same,
    Different,
    /// Involves a const generic: only rustc, through types, can decide.
    Undecided,
}

/// Compares two dims as far as expansion time allows.
pub fn compare(a: &Dim, b: &Dim) -> Comparison {
    match (&a.kind, &b.kind) {
        (x, y) if x == y => Comparison::Same,
        // Two numbers differ; a run-time dim never provably equals anything but itself.
        (DimKind::Lit(_), DimKind::Lit(_)) | (DimKind::Named(_), _) | (_, DimKind::Named(_)) => {
            Comparison::Different
        }
        _ => Comparison::Undecided,
    }
}

/// Requires `found == expected`: `false` if they differ; an undecided pair becomes an
/// assertion rustc checks.
pub fn unify(expected: &Dim, found: &Dim, assertions: &mut Vec<DimAssertion>) -> bool {
    match compare(expected, found) {
        Comparison::Same => true,
        Comparison::Different => false,
        Comparison::Undecided => {
            assertions.push(DimAssertion {
                expected: expected.clone(),
                found: found.clone(),
            });
            true
        }
    }
}

/// Requires `found == expected` dim by dim (and rank for rank), as [`unify`] does for one dim.
pub fn unify_shapes(expected: &Shape, found: &Shape, assertions: &mut Vec<DimAssertion>) -> bool {
    expected.0.len() == found.0.len()
        && expected
            .0
            .iter()
            .zip(&found.0)
            .all(|(e, f)| unify(e, f, assertions))
}

/// Whether a dim is the literal 1 (which broadcasts).
fn is_one(dim: &Dim) -> bool {
    dim.kind == DimKind::Lit(1)
}

/// The broadcast of two shapes under PyTorch's rules (align right; equal or 1), or the index
/// (in the longer shape) of the first pair that cannot broadcast.
pub fn broadcast(a: &Shape, b: &Shape, assertions: &mut Vec<DimAssertion>) -> Result<Shape, usize> {
    let rank = a.0.len().max(b.0.len());
    let pad = |shape: &Shape, i: usize| {
        let offset = rank - shape.0.len();
        (i >= offset).then(|| shape.0[i - offset].clone())
    };
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let dim = match (pad(a, i), pad(b, i)) {
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) if is_one(&y) => x,
            (Some(x), Some(y)) if is_one(&x) => y,
            (Some(x), Some(y)) => {
                if !unify(&x, &y, assertions) {
                    return Err(i);
                }
                x
            }
            (None, None) => unreachable!("index below the longer rank"),
        };
        dims.push(dim);
    }
    Ok(Shape(dims))
}

/// Whether two shapes are the same as far as the macro can tell (ranks and every dim `Same`).
pub fn same_shape(a: &Shape, b: &Shape) -> bool {
    a.0.len() == b.0.len()
        && a.0
            .iter()
            .zip(&b.0)
            .all(|(x, y)| compare(x, y) == Comparison::Same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proc_macro2::Span;

    fn lit(v: usize) -> Dim {
        Dim::lit(v, Span::call_site())
    }

    fn named(kind: DimKind) -> Dim {
        Dim {
            kind,
            span: Span::call_site(),
        }
    }

    #[test]
    fn comparisons() {
        assert_eq!(compare(&lit(3), &lit(3)), Comparison::Same);
        assert_eq!(compare(&lit(3), &lit(4)), Comparison::Different);
        let batch = named(DimKind::Named("B".into()));
        let hidden = named(DimKind::Const("H".into()));
        assert_eq!(compare(&batch, &batch.clone()), Comparison::Same);
        assert_eq!(compare(&batch, &lit(3)), Comparison::Different);
        assert_eq!(compare(&hidden, &lit(3)), Comparison::Undecided);
        let mut assertions = Vec::new();
        assert!(unify(&hidden, &lit(3), &mut assertions));
        assert_eq!(assertions.len(), 1);
    }

    #[test]
    fn broadcasting() {
        let batch = named(DimKind::Named("B".into()));
        let mut assertions = Vec::new();
        let x = Shape(vec![batch.clone(), lit(10)]);
        let bias = Shape(vec![lit(10)]);
        assert_eq!(
            broadcast(&x, &bias, &mut assertions).unwrap().to_string(),
            "[B, 10]"
        );
        let column = Shape(vec![batch, lit(1)]);
        assert_eq!(
            broadcast(&x, &column, &mut assertions).unwrap().to_string(),
            "[B, 10]"
        );
        assert_eq!(
            broadcast(&x, &Shape(vec![lit(9)]), &mut assertions).unwrap_err(),
            1
        );
        assert!(assertions.is_empty());
    }
}
