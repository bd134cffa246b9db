//! The surface syntax of `network!`, parsed with syn. Layer types are kept raw here (a name and
//! its arguments) and interpreted by `check`, so one bad layer does not hide the next.
//!
//! ```text
//! network  := attr* vis "struct" Name const-generics? (sequential | module)
//! sequential := "(" input ")" "->" shape "{" (name ":")? layer ("," ...)* ","? "}"
//! module   := "{" (attr* name ":" layer ",")* "}" "fn" "forward" "(" input ("," input)* ")" "->" shape block
//! input    := name ":" (shape | "Indices<" shape ">" | type)     shape := "[" dim ("," dim)* "]"
//! layer    := Name ("<" arg ("," arg)* ">")?     arg := dim | shape | name "=" literal
//! dim      := integer | Name
//! ```

use proc_macro2::{Span, TokenStream};
use syn::buffer::Cursor;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitInt, Token, Visibility, braced, bracketed, parenthesized};

mod kw {
    syn::custom_keyword!(forward);
    syn::custom_keyword!(usize);
}

/// A whole `network! { ... }` invocation.
pub struct NetworkDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub const_generics: Vec<Ident>,
    pub body: Body,
}

/// The two forms a network can be declared in.
pub enum Body {
    /// `struct Mlp(x: [B, 1000]) -> [B, 10] { Linear<1000, 100>, ReLU, ... }`.
    Sequential {
        input: InputDecl,
        output: ShapeDecl,
        layers: Vec<FieldDecl>,
    },
    /// Named layers and parameters, then `fn forward(..) -> [..] { .. }`.
    Module {
        fields: Vec<FieldDecl>,
        forward: Box<ForwardDecl>,
    },
}

/// `name: [dims]`, an input of the network; in `fn forward` also `name: Type`, a non-tensor
/// argument passed through (`repeats: usize`).
pub struct InputDecl {
    pub name: Ident,
    pub kind: InputKind,
}

/// What an input is.
pub enum InputKind {
    Tensor(ShapeDecl),
    /// `Indices<[B, T]>`: token ids or rows, which only an `Embedding` takes.
    Indices(ShapeDecl),
    Extra(Box<syn::Type>),
}

/// `[dim, dim, ...]`.
#[derive(Clone)]
pub struct ShapeDecl {
    pub dims: Vec<DimDecl>,
    pub span: Span,
}

/// One dim as written: a number or a name.
#[derive(Clone)]
pub enum DimDecl {
    Lit(usize, Span),
    Name(Ident),
}

impl DimDecl {
    pub fn span(&self) -> Span {
        match self {
            DimDecl::Lit(_, span) => *span,
            DimDecl::Name(ident) => ident.span(),
        }
    }
}

/// A layer or parameter: in the module form `name: Type`, in the sequential form an optional
/// name and a type.
pub struct FieldDecl {
    pub attrs: Vec<Attribute>,
    pub name: Option<Ident>,
    pub ty: LayerType,
    /// `[Type; count]`: a list of layers of one type, each with its own weights.
    pub count: Option<(usize, Span)>,
}

/// `Name<args>` as written, interpreted by `check`.
pub struct LayerType {
    pub name: Ident,
    pub args: Vec<LayerArg>,
    /// The tokens from the type's name to its closing `>`, for errors over the whole type.
    pub tokens: TokenStream,
}

/// One argument of a layer type.
pub enum LayerArg {
    Dim(DimDecl),
    Shape(ShapeDecl),
    Named {
        name: Ident,
        value: syn::Lit,
    },
    /// `-n`, as in `LogSoftmax<-1>`.
    Negative(usize, Span),
    /// A number with a fraction, maybe negative, as in `LeakyReLU<0.2>`.
    Float(f32, Span),
}

/// `fn forward(inputs) -> shape { body }`.
pub struct ForwardDecl {
    pub inputs: Vec<InputDecl>,
    /// The declared output shapes: one, or several written as a tuple `([N, 2], [N, 3])`.
    pub outputs: Vec<ShapeDecl>,
    pub body: syn::Block,
}

impl Parse for NetworkDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let const_generics = if input.peek(Token![<]) {
            parse_const_generics(input)?
        } else {
            Vec::new()
        };
        let body = if input.peek(syn::token::Paren) {
            parse_sequential(input)?
        } else if input.peek(syn::token::Brace) {
            parse_module(input)?
        } else {
            return Err(input.error(
                "expected `(input: [dims]) -> [dims] { layers }` (sequential form) \
                 or `{ fields } fn forward(..)` (module form) after the network's name",
            ));
        };
        if !input.is_empty() {
            return Err(input
                .error("unexpected tokens after the network; declare one network per `network!`"));
        }
        Ok(Self {
            attrs,
            vis,
            name,
            const_generics,
            body,
        })
    }
}

/// `<const H: usize, const W: usize>`.
fn parse_const_generics(input: ParseStream) -> syn::Result<Vec<Ident>> {
    input.parse::<Token![<]>()?;
    let mut names = Vec::new();
    while !input.peek(Token![>]) {
        if !input.peek(Token![const]) {
            return Err(input.error(
                "only const generics are supported here, like `<const H: usize>`; \
                 the backend type parameter is added by `network!`",
            ));
        }
        input.parse::<Token![const]>()?;
        names.push(input.parse()?);
        input.parse::<Token![:]>()?;
        input.parse::<kw::usize>()?;
        if !input.peek(Token![>]) {
            input.parse::<Token![,]>()?;
        }
    }
    input.parse::<Token![>]>()?;
    Ok(names)
}

fn parse_sequential(input: ParseStream) -> syn::Result<Body> {
    let content;
    parenthesized!(content in input);
    let network_input = content.parse()?;
    if !content.is_empty() {
        return Err(content.error("a sequential network takes one input, like `(x: [B, 784])`"));
    }
    input.parse::<Token![->]>()?;
    let output: ShapeDecl = input.parse()?;
    let content;
    braced!(content in input);
    let mut layers = Vec::new();
    while !content.is_empty() {
        let attrs = content.call(Attribute::parse_outer)?;
        let name = if content.peek(Ident) && content.peek2(Token![:]) && !content.peek2(Token![::])
        {
            let name = content.parse()?;
            content.parse::<Token![:]>()?;
            Some(name)
        } else {
            None
        };
        layers.push(FieldDecl {
            attrs,
            name,
            ty: content.parse()?,
            count: None,
        });
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    if layers.is_empty() {
        return Err(syn::Error::new(
            output.span,
            "a sequential network needs at least one layer",
        ));
    }
    Ok(Body::Sequential {
        input: network_input,
        output,
        layers,
    })
}

fn parse_module(input: ParseStream) -> syn::Result<Body> {
    let content;
    braced!(content in input);
    let mut fields = Vec::new();
    while !content.is_empty() {
        let attrs = content.call(Attribute::parse_outer)?;
        let name: Ident = content.parse()?;
        content.parse::<Token![:]>()?;
        let (ty, count) = if content.peek(syn::token::Bracket) {
            let list;
            bracketed!(list in content);
            let ty = list.parse()?;
            list.parse::<Token![;]>()?;
            let count: LitInt = list.parse()?;
            match count.base10_parse::<usize>() {
                Ok(value) if value > 0 => (ty, Some((value, count.span()))),
                _ => {
                    return Err(syn::Error::new(
                        count.span(),
                        "a list of layers holds at least one, like `[Block; 4]`",
                    ));
                }
            }
        } else {
            (content.parse()?, None)
        };
        fields.push(FieldDecl {
            attrs,
            name: Some(name),
            ty,
            count,
        });
        if !content.is_empty() {
            content.parse::<Token![,]>()?;
        }
    }
    if input.is_empty() {
        return Err(
            input.error("expected `fn forward(input: [dims]) -> [dims] { .. }` after the fields")
        );
    }
    let fn_token = input.parse::<Token![fn]>()?;
    input.parse::<kw::forward>()?;
    let args;
    parenthesized!(args in input);
    let inputs: Punctuated<InputDecl, Token![,]> =
        args.parse_terminated(InputDecl::parse, Token![,])?;
    if inputs.is_empty() {
        return Err(syn::Error::new(
            fn_token.span,
            "`forward` needs at least one input, like `x: [B, 784]`",
        ));
    }
    input.parse::<Token![->]>()?;
    let outputs = if input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in input);
        let shapes: Punctuated<ShapeDecl, Token![,]> =
            content.parse_terminated(ShapeDecl::parse, Token![,])?;
        if shapes.len() < 2 {
            return Err(content.error("several outputs are written as a tuple of at least two shapes, like `([N, 2], [N, 3])`"));
        }
        shapes.into_iter().collect()
    } else {
        vec![input.parse()?]
    };
    let body = input.parse()?;
    Ok(Body::Module {
        fields,
        forward: Box::new(ForwardDecl {
            inputs: inputs.into_iter().collect(),
            outputs,
            body,
        }),
    })
}

impl Parse for InputDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = input.parse()?;
        input.parse::<Token![:]>()?;
        let fork = input.fork();
        let indices = fork.parse::<Ident>().is_ok_and(|ident| ident == "Indices")
            && fork.peek(Token![<])
            && fork.peek2(syn::token::Bracket);
        let kind = if input.peek(syn::token::Bracket) {
            InputKind::Tensor(input.parse()?)
        } else if indices {
            input.parse::<Ident>()?;
            input.parse::<Token![<]>()?;
            let shape = input.parse()?;
            input.parse::<Token![>]>()?;
            InputKind::Indices(shape)
        } else if input.peek(Ident) || input.peek(Token![&]) || input.peek(syn::token::Paren) {
            InputKind::Extra(Box::new(input.parse()?))
        } else {
            return Err(input.error(
                "expected the input's shape, like `[B, 784]`, or a type for a non-tensor argument",
            ));
        };
        Ok(Self { name, kind })
    }
}

impl Parse for ShapeDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let content;
        let bracket = bracketed!(content in input);
        let dims: Punctuated<DimDecl, Token![,]> =
            content.parse_terminated(DimDecl::parse, Token![,])?;
        Ok(Self {
            dims: dims.into_iter().collect(),
            span: bracket.span.join(),
        })
    }
}

impl Parse for DimDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(LitInt) {
            let lit: LitInt = input.parse()?;
            let value = lit.base10_parse::<usize>().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "a dim must be a non-negative integer that fits in `usize`",
                )
            })?;
            Ok(DimDecl::Lit(value, lit.span()))
        } else if input.peek(Ident) {
            Ok(DimDecl::Name(input.parse()?))
        } else {
            Err(input.error("expected a dim: an integer like `784` or a name like `B` or `H`"))
        }
    }
}

impl Parse for LayerType {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if !input.peek(Ident) {
            return Err(input.error("expected a layer, like `Linear<784, 128>` or `ReLU`"));
        }
        let begin = input.cursor();
        let name: Ident = input.parse()?;
        let mut args = Vec::new();
        if input.peek(Token![<]) {
            input.parse::<Token![<]>()?;
            while !input.peek(Token![>]) {
                args.push(input.parse()?);
                if !input.peek(Token![>]) {
                    input.parse::<Token![,]>()?;
                }
            }
            input.parse::<Token![>]>()?;
        }
        let tokens = tokens_between(begin, input.cursor());
        Ok(Self { name, args, tokens })
    }
}

/// The token trees from `begin` up to (not including) `end`.
fn tokens_between(begin: Cursor, end: Cursor) -> TokenStream {
    let mut tokens = TokenStream::new();
    let mut cursor = begin;
    while cursor != end {
        let Some((tree, next)) = cursor.token_tree() else {
            break;
        };
        tokens.extend([tree]);
        cursor = next;
    }
    tokens
}

impl Parse for LayerArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.peek(syn::token::Bracket) {
            Ok(LayerArg::Shape(input.parse()?))
        } else if input.peek(syn::LitFloat) {
            let value: syn::LitFloat = input.parse()?;
            Ok(LayerArg::Float(value.base10_parse()?, value.span()))
        } else if input.peek(Token![-]) && input.peek2(syn::LitFloat) {
            let minus: Token![-] = input.parse()?;
            let value: syn::LitFloat = input.parse()?;
            let span = minus.span.join(value.span()).unwrap_or(minus.span);
            Ok(LayerArg::Float(-value.base10_parse::<f32>()?, span))
        } else if input.peek(Token![-]) {
            let minus: Token![-] = input.parse()?;
            let value: syn::LitInt = input.parse()?;
            let span = minus.span.join(value.span()).unwrap_or(minus.span);
            Ok(LayerArg::Negative(value.base10_parse()?, span))
        } else if input.peek(Ident) && input.peek2(Token![=]) {
            let name = input.parse()?;
            input.parse::<Token![=]>()?;
            Ok(LayerArg::Named {
                name,
                value: input.parse()?,
            })
        } else {
            Ok(LayerArg::Dim(input.parse()?))
        }
    }
}

impl LayerArg {
    pub fn span(&self) -> Span {
        match self {
            LayerArg::Dim(dim) => dim.span(),
            LayerArg::Shape(shape) => shape.span,
            LayerArg::Named { name, .. } => name.span(),
            LayerArg::Negative(_, span) | LayerArg::Float(_, span) => *span,
        }
    }
}
