//! Error collection: every phase records what it finds and carries on, so the user sees all
//! errors of one expansion together, each at the span to edit.

use proc_macro2::Span;
use quote::ToTokens;

/// The errors found so far.
#[derive(Default)]
pub struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    /// Records `message` at `span`.
    pub fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records `message` over the tokens of `tokens` (first to last).
    pub fn over(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// How many errors were reported so far.
    pub fn count(&self) -> usize {
        self.errors.len()
    }

    /// Whether nothing was reported so far.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors as one `syn::Error` (which renders as one `compile_error!` per message), or
    /// `None` if there were none.
    pub fn into_combined(self) -> Option<syn::Error> {
        self.errors.into_iter().reduce(|mut all, next| {
            all.combine(next);
            all
        })
    }
}

/// The candidate closest to `name` by edit distance, ignoring case, if it is close enough to
/// be the one meant (`fc3` for `fc2`, `ReLU` for `Relu`).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&name, &candidate.to_lowercase()), candidate))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The edit distance between `a` and `b` in chars, counting a swap of neighbours as one edit
/// (`rleu` is one edit from `relu`): insertions, deletions, substitutions and transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between the first i chars of a and the first j of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("fc3", ["fc1", "fc2", "out"]), Some("fc1"));
        assert_eq!(did_you_mean("Relu", ["ReLU", "GELU"]), Some("ReLU"));
        assert_eq!(did_you_mean("rleu", ["relu", "gelu"]), Some("relu"));
        assert_eq!(did_you_mean("dropout", ["relu", "gelu", "tanh"]), None);
        assert_eq!(did_you_mean("x", ["relu"]), None);
    }
}
