//! How a tensor prints with `{}`: like PyTorch's `print(tensor)`, values with four decimals
//! (scientific notation when they span too many orders of magnitude), rows aligned and wrapped
//! at 80 columns, and the middle of each dim elided past 1000 elements.

use std::fmt::{self, Write};

use crate::backend::Backend;
use crate::tensor::Tensor;

/// Tensors with more elements than this print only their edges, like PyTorch's `threshold`.
const SUMMARY_THRESHOLD: usize = 1000;

/// Elements printed at each end of an elided dim, like PyTorch's `edgeitems`.
const EDGE_ITEMS: usize = 3;

/// Rows of values wrap at this width, like PyTorch's `linewidth`.
const LINE_WIDTH: usize = 80;

impl<B: Backend> fmt::Display for Tensor<B> {
    /// Copies the values to the host; a device error prints in place of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.try_to_vec() {
            Ok(values) => values,
            Err(error) => return write!(f, "tensor(<{error}>)"),
        };
        let device = self.device().name();
        let device = if device == "cpu" {
            String::new()
        } else {
            format!(", device='{device}'")
        };
        if values.is_empty() {
            // PyTorch names the size of an empty tensor unless it is 1-D.
            let size = match self.dims() {
                [_] => String::new(),
                dims => {
                    let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
                    format!(", size=({})", dims.join(", "))
                }
            };
            return write!(f, "tensor([]{size}{device})");
        }
        let summarize = values.len() > SUMMARY_THRESHOLD;
        // Like PyTorch, only the printed elements choose the notation.
        let style = if summarize {
            Style::of(&edges(&values, self.dims()))
        } else {
            Style::of(&values)
        };
        let mut out = String::from("tensor(");
        write_dim(
            &mut out,
            &values,
            self.dims(),
            &style,
            summarize,
            "tensor(".len(),
        );
        out.push_str(&device);
        out.push(')');
        f.write_str(&out)
    }
}

/// How every element of one tensor is written: one notation and one width, so columns line up.
struct Style {
    notation: Notation,
    width: usize,
}

/// PyTorch's three notations.
#[derive(Clone, Copy, PartialEq)]
enum Notation {
    /// Whole numbers: `3.`
    Whole,
    /// Four decimals: `3.2500`
    Fixed,
    /// Four decimals and an exponent: `3.2500e+00`
    Scientific,
}

impl Style {
    /// PyTorch's choice: whole numbers print as such, and values that span more than three
    /// orders of magnitude, exceed 1e8 or (unless whole) fall below 1e-4 print in scientific
    /// notation.
    fn of(values: &[f32]) -> Self {
        let finite = || values.iter().copied().filter(|v| v.is_finite());
        let magnitudes = || finite().map(f32::abs).filter(|&v| v > 0.0);
        let max = magnitudes().fold(0.0f32, f32::max);
        let min = magnitudes().fold(f32::INFINITY, f32::min);
        let spread = max > 0.0 && (max / min > 1e3 || max > 1e8);
        let whole = finite().all(|v| v == v.trunc());
        let notation = match (whole, spread) {
            (_, true) => Notation::Scientific,
            (true, false) => Notation::Whole,
            (false, false) if max > 0.0 && min < 1e-4 => Notation::Scientific,
            (false, false) => Notation::Fixed,
        };
        let mut style = Self { notation, width: 0 };
        // Like PyTorch, only nonzero finite values set the width; the others are padded to it.
        style.width = finite()
            .filter(|&v| v != 0.0)
            .map(|v| style.format(v).len())
            .max()
            .unwrap_or(1);
        style
    }

    fn format(&self, value: f32) -> String {
        if value.is_nan() {
            return "nan".to_owned();
        }
        if value.is_infinite() {
            return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
        }
        match self.notation {
            Notation::Whole => format!("{value:.0}."),
            Notation::Fixed => format!("{value:.4}"),
            Notation::Scientific => {
                // Rust writes `3.2500e0`; PyTorch `3.2500e+00`.
                let text = format!("{value:.4e}");
                let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
                let exponent: i32 = exponent.parse().unwrap_or(0);
                let sign = if exponent < 0 { '-' } else { '+' };
                format!("{mantissa}e{sign}{:02}", exponent.abs())
            }
        }
    }
}

/// The indices of dim `len` that print: all, or the edges around an elision (`None`).
fn shown(len: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && len > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain([None])
            .chain((len - EDGE_ITEMS..len).map(Some))
            .collect()
    } else {
        (0..len).map(Some).collect()
    }
}

/// The elements a summarized print shows.
fn edges(values: &[f32], dims: &[usize]) -> Vec<f32> {
    let Some((&len, inner)) = dims.split_first() else {
        return values.to_vec();
    };
    let stride: usize = inner.iter().product();
    shown(len, true)
        .into_iter()
        .flatten()
        .flat_map(|index| edges(&values[index * stride..(index + 1) * stride], inner))
        .collect()
}

/// Writes the row-major `values` of shape `dims` as nested brackets; `indent` is the column
/// the outermost bracket stands at.
fn write_dim(
    out: &mut String,
    values: &[f32],
    dims: &[usize],
    style: &Style,
    summarize: bool,
    indent: usize,
) {
    let Some((&len, inner)) = dims.split_first() else {
        let _ = write!(
            out,
            "{:>width$}",
            style.format(values[0]),
            width = style.width
        );
        return;
    };
    let stride: usize = inner.iter().product();
    // A row of values wraps after as many as fit the line, as PyTorch's do.
    let per_line = (LINE_WIDTH.saturating_sub(indent) / (style.width + 2)).max(1);
    out.push('[');
    for (position, index) in shown(len, summarize).iter().enumerate() {
        if position > 0 {
            out.push(',');
            if inner.is_empty() && position % per_line != 0 {
                out.push(' ');
            } else if inner.is_empty() {
                out.push('\n');
                out.push_str(&" ".repeat(indent + 1));
            } else {
                // One blank line between matrices, none between rows.
                out.push_str(&"\n".repeat(inner.len()));
                out.push_str(&" ".repeat(indent + 1));
            }
        }
        match index {
            Some(index) => {
                let slice = &values[index * stride..(index + 1) * stride];
                write_dim(out, slice, inner, style, summarize, indent + 1);
            }
            // PyTorch pads an elided element by one space, an elided row by none.
            None if inner.is_empty() => out.push_str(" ..."),
            None => out.push_str("..."),
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use crate::{Cpu, Tensor};

    #[test]
    fn prints_like_pytorch() {
        // Each expected string is what PyTorch 2.x prints for the same values.
        let t = Tensor::from_vec(vec![1.0, -2.5, 3.25, 0.0], [2, 2], &Cpu);
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000, -2.5000],\n        [ 3.2500,  0.0000]])"
        );
        assert_eq!(
            Tensor::from_vec(vec![1.5], [], &Cpu).to_string(),
            "tensor(1.5000)"
        );
        assert_eq!(
            Tensor::from_vec(vec![1.0, 2.0], [2], &Cpu).to_string(),
            "tensor([1., 2.])"
        );
        let cube = Tensor::from_vec((0..8).map(|v| v as f32).collect(), [2, 2, 2], &Cpu);
        assert_eq!(
            cube.to_string(),
            "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]])"
        );
    }

    #[test]
    fn large_tensors_print_their_edges_and_odd_values_their_notation() {
        let big = Tensor::from_vec((1000..3000).map(|v| v as f32 / 4.0).collect(), [2000], &Cpu);
        assert_eq!(
            big.to_string(),
            "tensor([250.0000, 250.2500, 250.5000,  ..., 749.2500, 749.5000, 749.7500])"
        );
        let rows = Tensor::from_vec((0..1200).map(|v| v as f32).collect(), [400, 3], &Cpu);
        let text = rows.to_string();
        assert!(
            text.starts_with("tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00],\n"),
            "{text}"
        );
        assert!(text.contains("],\n        ...,\n        ["), "{text}");
        let spread = Tensor::from_vec(vec![1e-6, 0.5, f32::NAN, -f32::INFINITY], [4], &Cpu);
        assert_eq!(
            spread.to_string(),
            "tensor([1.0000e-06, 5.0000e-01,        nan,       -inf])"
        );
    }

    #[test]
    fn widths_wrapping_and_empty_tensors_follow_pytorch() {
        let odd = Tensor::from_vec(vec![1.0, f32::NAN], [2], &Cpu);
        assert_eq!(odd.to_string(), "tensor([1., nan])");
        let long = Tensor::from_vec((0..30).map(|v| v as f32).collect(), [30], &Cpu);
        assert_eq!(
            long.to_string(),
            "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n        \
             14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n        \
             28., 29.])"
        );
        assert_eq!(Tensor::zeros([0], &Cpu).to_string(), "tensor([])");
        assert_eq!(
            Tensor::zeros([0, 3], &Cpu).to_string(),
            "tensor([], size=(0, 3))"
        );
    }
}
