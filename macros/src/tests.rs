//! Tests of `expand` on token streams: the messages users see, an expansion snapshot, and a
//! fuzz test that mutated input never panics the macro.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::time::Instant;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::quote;

use crate::expand;

/// The three forms, const generics and every forward construct, as source text.
const VALID: [&str; 5] = [
    "pub struct RawNet { w1: Param<[1000, 100]>, w2: Param<[100, 10]> }
     fn forward(x: [N, 1000]) -> [N, 10] { x.mm(w1).clamp_min(0.0).mm(w2) }",
    "pub struct TwoLayerNet(x: [N, 1000]) -> [N, 10] { Linear<1000, 100>, ReLU, Linear<100, 10> }",
    "pub struct TwoLayerNet { linear1: Linear<1000, 100>, linear2: Linear<100, 10> }
     fn forward(x: [N, 1000]) -> [N, 10] { let h_relu = linear1(x).clamp_min(0.0); linear2(h_relu) }",
    "struct Mlp<const H: usize>(x: [B2, 784]) -> [B2, 10] {
         fc1: Linear<784, H>, act: GELU, Linear<H, 10, bias = false>, Tanh
     }",
    "struct Net<const H: usize, const W: usize> {
         fc: Linear<W, H>, b: Param<[H]>, w: Param<[H, 3]>, scale: Param<[1]>, act: Sigmoid
     }
     fn forward(x: [N, W], y: [N, 3]) -> [] {
         let mut h = act(fc(x) + b) * 2.0 - 1.0;
         h = -h.relu().tanh().gelu().sigmoid().pow(2.0);
         (h.mm(w) - y * scale).t().mm(y).sum() + (1.0 - x).mean()
     }",
];

/// The messages of the `compile_error!`s in an expansion.
fn messages(output: &TokenStream) -> Vec<String> {
    let file: syn::File = syn::parse2(output.clone()).expect("expansion parses as items");
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(item) if item.mac.path.is_ident("compile_error") => {
                Some(item.mac.parse_body::<syn::LitStr>().ok()?.value())
            }
            syn::Item::Macro(item) if item.mac.path.segments.last()?.ident == "compile_error" => {
                Some(item.mac.parse_body::<syn::LitStr>().ok()?.value())
            }
            _ => None,
        })
        .collect()
}

fn expand_str(source: &str) -> TokenStream {
    expand(TokenStream::from_str(source).expect("test input lexes"))
}

#[test]
fn valid_inputs_expand_without_errors() {
    for source in VALID {
        let output = expand_str(source);
        assert_eq!(messages(&output), Vec::<String>::new(), "{source}");
        assert!(output.to_string().contains("fn backward"), "{source}");
    }
}

#[test]
fn sequential_mismatch_names_both_layers() {
    let output = expand(quote! {
        struct Net(x: [N, 784]) -> [N, 10] { Linear<784, 100>, ReLU, Linear<50, 10> }
    });
    assert_eq!(
        messages(&output),
        [
            "`Linear<50, 10>` (layer 2) expects input `[N, 50]`, found `[N, 100]` from `ReLU` (layer 1)"
        ]
    );
}

#[test]
fn forward_mismatch_reports_the_call_and_the_declaration() {
    let output = expand(quote! {
        struct Net { fc1: Linear<784, 100>, fc2: Linear<50, 10> }
        fn forward(x: [N, 784]) -> [N, 10] { fc2(fc1(x)) }
    });
    assert_eq!(
        messages(&output),
        [
            "`fc2` expects input `[N, 50]`, found `[N, 100]` from `fc1`",
            "`fc2` is declared with 50 input features here",
        ]
    );
}

#[test]
fn broadcast_and_mm_errors_name_both_shapes() {
    let output = expand(quote! {
        struct Net { w: Param<[784, 100]>, b: Param<[10]>, v: Param<[7, 3]> }
        fn forward(x: [N, 784]) -> [N, 100] { let h = x.mm(w) + b; x.mm(v) }
    });
    assert_eq!(
        messages(&output),
        [
            "cannot add `[N, 100]` (`.mm()`) and `[10]` (`b`): dims 100 and 10 differ and neither is 1",
            "`.mm()` cannot multiply `[N, 784]` (input `x`) by `[7, 3]` (`v`): inner dims 784 and 7 differ",
        ]
    );
}

#[test]
fn independent_mistakes_are_reported_together() {
    let sequential = expand(quote! {
        struct Net(x: [N, 784]) -> [N, 5] {
            Linear<784, 100>, ReLU, Linear<50, 10>, Linear<20, 5>
        }
    });
    assert_eq!(
        messages(&sequential),
        [
            "`Linear<50, 10>` (layer 2) expects input `[N, 50]`, found `[N, 100]` from `ReLU` (layer 1)",
            "`Linear<20, 5>` (layer 3) expects input `[N, 20]`, found `[N, 10]` from `Linear<50, 10>` (layer 2)",
        ]
    );
    let module = expand(quote! {
        struct Net { a: Linear<784, 100>, b: Linear<50, 10>, c: Linear<20, 5> }
        fn forward(x: [N, 784]) -> [N, 7] { c(b(a(x)).relu()) }
    });
    let messages = messages(&module);
    assert_eq!(messages.len(), 5, "{messages:#?}");
    assert!(messages[0].starts_with("`b` expects input `[N, 50]`"));
    assert!(
        messages[2]
            .starts_with("`c` expects input `[N, 20]`, found `[N, 10]` from `.relu()` of `b`")
    );
    assert!(
        messages[4]
            .starts_with("the network declares output `[N, 7]`, but forward produces `[N, 5]`")
    );
}

#[test]
fn rejected_field_is_reported_once() {
    let output = expand(quote! {
        struct Net { conv: Capsule<3, 3>, w: Param<784>, fc: Linear<K, 10> }
        fn forward(x: [N, 784]) -> [N, 10] { fc(conv(x) * w) }
    });
    let messages = messages(&output);
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(messages[0].starts_with("unknown layer `Capsule`; the layers `network!` knows"));
    assert!(messages[1].starts_with("`Param` takes one shape in brackets"));
    assert!(messages[2].contains("`K` is not a const generic"));
    // The struct is still emitted, so code using it reports nothing more.
    assert!(output.to_string().contains("struct Net"));
}

#[test]
fn unsupported_syntax_says_what_is_supported() {
    let output = expand(quote! {
        struct Net { fc: Linear<4, 4> }
        fn forward(x: [N, 4]) -> [N, 4] { let f = |h| fc(h); fc(x); }
    });
    let messages = messages(&output);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(messages[0].starts_with("unsupported expression in `forward`; supported: `let`"));
    assert_eq!(
        messages[1],
        "`forward` returns its last expression; remove this `;`"
    );
}

/// Edge inputs the fuzz test below reaches only by chance.
#[test]
fn edge_inputs_do_not_panic() {
    for source in [
        // A `Linear` with 0 in a sequential chain, and an empty input shape.
        "struct Net(x: []) -> [N, 10] { Linear<0, 10> }",
        // `.t()` applied twice, then used as a value.
        "struct Net { w: Param<[3, 4]> } fn forward(x: [N, 3]) -> [N, 4] { let v = w.t().t(); x.mm(v) }",
        // Scalars where tensors are expected.
        "struct Net { w: Param<[3]> } fn forward(x: [N]) -> [N] { (1.0).t() + 1e40 * x.mm(2) }",
    ] {
        let result = catch_unwind(|| expand_str(source));
        assert!(result.is_ok(), "expand panicked on {source}");
    }
}

/// The stage 6 `TwoLayerNet`, pretty-printed: what `network!` expands to for a small net.
/// `UPDATE_SNAPSHOTS=1 cargo test -p declnet-macros` rewrites the file.
#[test]
fn two_layer_net_expansion_snapshot() {
    let output = expand(quote! {
        /// The tutorial's `TwoLayerNet`: `linear2(linear1(x).clamp(min=0))`.
        pub struct TwoLayerNet {
            linear1: Linear<1000, 100>,
            linear2: Linear<100, 10>,
        }
        fn forward(x: [N, 1000]) -> [N, 10] {
            let h_relu = linear1(x).clamp_min(0.0);
            linear2(h_relu)
        }
    });
    let file: syn::File = syn::parse2(output).expect("expansion parses as items");
    let pretty = format!(
        "// What `network!` expands to for the stage 6 `TwoLayerNet` (examples/06_custom_module.rs).\n\
         // Generated by `UPDATE_SNAPSHOTS=1 cargo test -p declnet-macros`; do not edit.\n\n{}",
        prettyplease::unparse(&file)
    );
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/two_layer_net.expanded.rs"
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &pretty).expect("snapshot is writable");
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        expected == pretty,
        "the expansion differs from {path}; rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    );
}

/// Token atoms the fuzz test inserts: keywords and names the grammar uses, delimiters, and
/// literals at the edges of what dims and scalars accept.
const ATOMS: [&str; 47] = [
    "struct",
    "fn",
    "forward",
    "Linear",
    "Param",
    "ReLU",
    "GELU",
    "Softmax",
    "LogSoftmax",
    "softmax",
    "const",
    "usize",
    "let",
    "mut",
    "return",
    "bias",
    "true",
    "<",
    ">",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ":",
    "::",
    ";",
    "->",
    "=",
    "-",
    "+",
    "*",
    ".",
    "0",
    "1",
    "784",
    "1e40",
    "18446744073709551616",
    "0.5",
    "B",
    "H",
    "x",
    "mm",
    "t",
    "\"s\"",
];

/// A small deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The tokens of `stream` as a flat list of source atoms: delimiters are atoms of their own,
/// joint punctuation (`->`, `::`) stays one atom.
fn flatten(stream: TokenStream, atoms: &mut Vec<String>) {
    let mut joint = String::new();
    for tree in stream {
        match tree {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                atoms.push(open.to_owned());
                flatten(group.stream(), atoms);
                atoms.push(close.to_owned());
            }
            TokenTree::Punct(punct) => {
                joint.push(punct.as_char());
                if punct.spacing() == Spacing::Alone {
                    atoms.push(std::mem::take(&mut joint));
                }
            }
            other => atoms.push(other.to_string()),
        }
    }
}

/// Random edits of `atoms` (one in half the cases, else up to five): delete, duplicate, swap,
/// replace or insert.
fn mutate(atoms: &mut Vec<String>, rng: &mut Rng) {
    let edits = if rng.below(2) == 0 {
        1
    } else {
        1 + rng.below(5)
    };
    for _ in 0..edits {
        if atoms.is_empty() {
            atoms.push(ATOMS[rng.below(ATOMS.len())].to_owned());
        }
        let at = rng.below(atoms.len());
        let atom = ATOMS[rng.below(ATOMS.len())].to_owned();
        match rng.below(5) {
            0 => {
                atoms.remove(at);
            }
            1 => atoms.insert(at, atoms[at].clone()),
            2 => {
                let other = rng.below(atoms.len());
                atoms.swap(at, other);
            }
            3 => atoms[at] = atom,
            _ => atoms.insert(at, atom),
        }
    }
}

/// 40,000 mutated inputs: `expand` must return tokens (items or `compile_error!`s) for every
/// one that lexes, and never panic.
#[test]
fn mutated_inputs_never_panic() {
    const CASES: usize = 40_000;
    let bases: Vec<Vec<String>> = VALID
        .iter()
        .map(|source| {
            let mut atoms = Vec::new();
            flatten(
                TokenStream::from_str(source).expect("valid input lexes"),
                &mut atoms,
            );
            atoms
        })
        .collect();
    let mut rng = Rng(0x5EED);
    let (mut expanded, mut rejected, mut unlexed) = (0, 0, 0);
    let mut panics = Vec::new();
    let start = Instant::now();
    for case in 0..CASES {
        let mut atoms = bases[case % bases.len()].clone();
        mutate(&mut atoms, &mut rng);
        let source = atoms.join(" ");
        let Ok(input) = TokenStream::from_str(&source) else {
            unlexed += 1;
            continue;
        };
        match catch_unwind(AssertUnwindSafe(|| expand(input))) {
            Ok(output) => {
                if output.to_string().contains("compile_error") {
                    rejected += 1;
                } else {
                    expanded += 1;
                }
                // Generated items and the errors' fallback items must both parse.
                assert!(
                    syn::parse2::<syn::File>(output).is_ok(),
                    "unparsable expansion of {source}"
                );
            }
            Err(_) => panics.push(source),
        }
    }
    eprintln!(
        "fuzz: {CASES} inputs in {:.1?}: {expanded} expanded, {rejected} compile errors, \
         {unlexed} did not lex, {} panics",
        start.elapsed(),
        panics.len()
    );
    assert!(panics.is_empty(), "expand panicked on: {panics:#?}");
    assert!(
        expanded > 0 && rejected > 0,
        "the mutations must reach both outcomes"
    );
}

#[test]
fn numbers_that_overflow_an_f32_are_errors_not_panics() {
    let layer = expand(quote! {
        struct Net(x: [N, 4]) -> [N, 4] { LeakyReLU<1e39> }
    });
    assert_eq!(messages(&layer), ["this number does not fit in an `f32`"]);
    let divisor = expand(quote! {
        struct Net { fc: Linear<4, 4> }
        fn forward(x: [N, 4]) -> [N, 4] { fc(x) / 1e-39 }
    });
    assert_eq!(
        messages(&divisor),
        ["dividing by this number overflows an `f32`"]
    );
}

#[test]
fn compound_assignment_keeps_its_targets_shape() {
    let output = expand(quote! {
        struct Net { head: Linear<10, 1> }
        fn forward(x: [N, 10]) -> [N, 10] { let mut h = head(x); h += x; h }
    });
    assert_eq!(
        messages(&output),
        [
            "`h +=` would change `h` from `[N, 1]` to `[N, 10]`; an in-place update keeps its \
          target's shape (write `h = h + ..` for a new tensor)"
        ]
    );
}

#[test]
fn a_failed_binding_reports_once() {
    let output = expand(quote! {
        struct Net { fc: Linear<4, 4> }
        fn forward(x: [N, 4]) -> [N, 4] { let h = fc(x).rleu(); fc(h) + h }
    });
    assert_eq!(
        messages(&output),
        ["unknown method `.rleu()` in `forward`; did you mean `.relu()`?"]
    );
}

#[test]
fn a_branch_inside_a_loop_says_nesting_is_unsupported() {
    let output = expand(quote! {
        struct Net { fc: Linear<4, 4> }
        fn forward(x: [N, 4], n: usize, f: bool) -> [N, 4] {
            let mut h = fc(x);
            for _ in 0..n { if f { h = h.relu(); } }
            h
        }
    });
    assert_eq!(
        messages(&output),
        ["nested loops and branches in `forward` are not supported yet"]
    );
}
