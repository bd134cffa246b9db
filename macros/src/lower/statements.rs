//! The statements of a forward body: `let`, reassignment and `+=`, the output expression,
//! and the regions (`for` loops, `if` arms) with the variables they carry.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Expr, Ident, Pat, Stmt};

use super::dims::split_binding;
use super::{Lowered, Lowerer, SUPPORTED_SYNTAX, binding_name, compound_op, expr_ident, op_symbol};
use crate::ir::{Op, Region, ValueId};
use crate::parse::ForwardDecl;
use crate::shape::unify_shapes;

impl Lowerer<'_> {
    /// The statements of `fn forward`.
    pub(super) fn forward_body(&mut self, forward: &ForwardDecl) -> Option<Vec<ValueId>> {
        let stmts = &forward.body.stmts;
        let mut output = None;
        // Whether a missing output expression was already reported at the last statement.
        let mut ended = false;
        for (index, stmt) in stmts.iter().enumerate() {
            let last = index + 1 == stmts.len();
            match stmt {
                Stmt::Expr(Expr::ForLoop(for_loop), _) if !last => self.for_loop(for_loop),
                Stmt::Expr(Expr::If(branch), _) if !last => self.branch(branch),
                Stmt::Expr(expr, None) if last => {
                    output = self.outputs(expr, forward.outputs.len());
                }
                Stmt::Expr(Expr::Return(ret), _) => {
                    self.errors.over(
                        ret,
                        "end `forward` with the output expression instead of `return`",
                    );
                    ended |= last;
                }
                Stmt::Expr(expr, Some(semi)) if last => {
                    self.errors.at(
                        semi.span,
                        "`forward` returns its last expression; remove this `;`",
                    );
                    // Still lowered, for the errors inside it.
                    self.tensor(expr);
                    ended = true;
                }
                other => self.statement(other),
            }
        }
        if !ended && output.is_none() && !matches!(stmts.last(), Some(Stmt::Expr(_, None))) {
            self.errors.at(
                forward.body.brace_token.span.close(),
                "`forward` must end with the output expression (no `;` after it)",
            );
        }
        output
    }

    /// The output expression: one tensor, or a tuple of as many as the declared outputs.
    pub(super) fn outputs(&mut self, expr: &Expr, count: usize) -> Option<Vec<ValueId>> {
        match expr {
            Expr::Tuple(tuple) if count > 1 && tuple.elems.len() == count => {
                let ids: Vec<Option<ValueId>> =
                    tuple.elems.iter().map(|e| self.tensor(e)).collect();
                ids.into_iter().collect()
            }
            _ if count > 1 => {
                self.errors.over(
                    expr,
                    format!(
                        "`forward` declares {count} outputs: end it with a tuple of {count} tensors"
                    ),
                );
                None
            }
            _ => self.tensor(expr).map(|id| vec![id]),
        }
    }

    /// A statement other than the output expression: `let`, reassignment, `for`.
    pub(super) fn statement(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Local(local) => {
                if let Some((pat, call)) = split_binding(local) {
                    self.split_let(pat, call);
                    return;
                }
                let Some(name) = binding_name(&local.pat) else {
                    self.errors.over(
                        &local.pat,
                        "`let` in `forward` binds one name, like `let h = ..`",
                    );
                    return;
                };
                let Some(init) = local.init.as_ref().filter(|init| init.diverge.is_none()) else {
                    self.errors
                        .over(local, "`let` in `forward` needs a value: `let h = ..;`");
                    return;
                };
                let value = self.tensor(&init.expr);
                self.bind(name, value);
            }
            Stmt::Expr(Expr::Assign(assign), Some(_)) => {
                let Some(name) = expr_ident(&assign.left) else {
                    self.errors.over(
                        &assign.left,
                        "only a name can be reassigned in `forward`, like `h = ..;`",
                    );
                    return;
                };
                if !self.locals.contains_key(&name.to_string()) {
                    self.errors.at(
                        name.span(),
                        format!("cannot assign to `{name}`: it is not a `let` binding or input"),
                    );
                    return;
                }
                let value = self.tensor(&assign.right);
                self.bind(name, value);
            }
            Stmt::Expr(Expr::Binary(binary), Some(_)) if compound_op(binary.op).is_some() => {
                self.compound_assign(binary);
            }
            Stmt::Expr(Expr::ForLoop(for_loop), _) => self.for_loop(for_loop),
            Stmt::Expr(Expr::If(branch), _) => self.branch(branch),
            Stmt::Expr(expr, _) => {
                self.errors.over(expr, "this statement's value is unused; bind it with `let` or make it the last expression");
            }
            other => {
                self.errors.over(
                    other,
                    format!("unsupported statement in `forward`; supported: {SUPPORTED_SYNTAX}"),
                );
            }
        }
    }

    /// `h += expr` (and `-=`, `*=`, `/=`): `h = h + expr`.
    pub(super) fn compound_assign(&mut self, binary: &syn::ExprBinary) {
        let Some(name) = expr_ident(&binary.left) else {
            self.errors.over(
                &binary.left,
                "only a name can be updated in `forward`, like `h += ..;`",
            );
            return;
        };
        let Some(&current) = self.locals.get(&name.to_string()) else {
            self.errors.at(
                name.span(),
                format!("cannot update `{name}`: it is not a `let` binding or input"),
            );
            return;
        };
        let Some(op) = compound_op(binary.op) else {
            return;
        };
        let Some(right) = self.expr(&binary.right) else {
            return;
        };
        let operands = [
            (Lowered::Value(current), &*binary.left),
            (right, &*binary.right),
        ];
        let origin = format!("`{}`", binary.op.to_token_stream());
        let value = self
            .combine(op, operands, &binary.op, origin)
            .and_then(|value| self.materialize(value, &binary.right));
        // Like PyTorch's in-place ops, `h += e` keeps `h`'s shape.
        if let Some(id) = value {
            let (before, after) = (self.shape(current).clone(), self.shape(id).clone());
            let keeps = unify_shapes(&before, &after, &mut self.assertions);
            if !keeps {
                self.errors.over(
                    binary.op,
                    format!(
                        "`{name} {}` would change `{name}` from `{before}` to `{after}`; an \
                         in-place update keeps its target's shape (write `{name} = {name} {} ..` \
                         for a new tensor)",
                        binary.op.to_token_stream(),
                        op_symbol(op)
                    ),
                );
                self.bind(name, None);
                return;
            }
        }
        self.bind(name, value);
    }

    /// Binds `name` to `value`, or, when lowering the value failed (and said why), marks the
    /// name so that its later uses report nothing more.
    pub(super) fn bind(&mut self, name: &Ident, value: Option<ValueId>) {
        let key = name.to_string();
        match value {
            Some(value) => {
                self.failed.remove(&key);
                self.locals.insert(key, value);
            }
            None => {
                self.locals.remove(&key);
                self.failed.insert(key);
            }
        }
    }

    /// `for _ in <range> { .. }`: a loop whose trip count is known at run time. Variables the
    /// body reassigns are carried from iteration to iteration and must keep their shape.
    pub(super) fn for_loop(&mut self, for_loop: &syn::ExprForLoop) {
        if let Some(list) = self.layer_list(&for_loop.expr) {
            self.list_loop(for_loop, list);
            return;
        }
        if self.region.is_some() {
            self.errors.at(
                for_loop.for_token.span,
                "nested loops and branches in `forward` are not supported yet",
            );
            return;
        }
        if !matches!(&*for_loop.pat, Pat::Wild(_) | Pat::Ident(_)) {
            self.errors.over(
                &for_loop.pat,
                "loop with `for _ in ..`; the loop variable cannot be a tensor",
            );
            return;
        }
        self.region_body((*for_loop.expr).clone(), &for_loop.body, "the loop");
    }

    /// The list of layers `expr` names (`blocks` or `&blocks`): its fields' indices.
    fn layer_list(&self, expr: &Expr) -> Option<Vec<usize>> {
        let expr = match expr {
            Expr::Reference(reference) => &*reference.expr,
            other => other,
        };
        let name = expr_ident(expr)?;
        let elements: Vec<usize> = (0..self.fields.len())
            .filter(|&index| {
                let field = &self.fields[index];
                field.ident == *name && field.element.is_some()
            })
            .collect();
        (!elements.is_empty()).then_some(elements)
    }

    /// `for block in blocks { .. }` over a list of layers: the body lowered once per element in
    /// order, `block` naming that element, so every iteration applies its own weights. The
    /// names the body binds with `let` are its own; the ones it reassigns carry over.
    fn list_loop(&mut self, for_loop: &syn::ExprForLoop, list: Vec<usize>) {
        let Pat::Ident(var) = &*for_loop.pat else {
            self.errors.over(
                &for_loop.pat,
                "name the layer a loop over a list applies, like `for block in blocks`",
            );
            return;
        };
        if self.list_element.is_some() {
            self.errors.at(
                for_loop.for_token.span,
                "loops over lists of layers cannot nest yet",
            );
            return;
        }
        let body_lets: Vec<String> = for_loop
            .body
            .stmts
            .iter()
            .filter_map(|stmt| match stmt {
                Stmt::Local(local) => binding_name(&local.pat).map(ToString::to_string),
                _ => None,
            })
            .collect();
        let outer = self.locals.clone();
        let before = self.errors.count();
        for element in list {
            self.list_element = Some((var.ident.to_string(), element));
            for stmt in &for_loop.body.stmts {
                self.statement(stmt);
            }
            for name in &body_lets {
                match outer.get(name) {
                    Some(&id) => self.locals.insert(name.clone(), id),
                    None => self.locals.remove(name),
                };
            }
            // The elements are alike: a mistake in the body shows in the first already.
            if self.errors.count() > before {
                break;
            }
        }
        self.list_element = None;
    }

    /// `if cond { .. } else if .. { .. } else { .. }` on run-time `bool`s: each arm becomes a
    /// region that runs once when its guard (its condition, and no earlier one) holds, else not
    /// at all; so backward replays exactly the arm that ran. Tensors an arm reassigns must keep
    /// their shape, so every arm leaves them as the others do.
    pub(super) fn branch(&mut self, branch: &syn::ExprIf) {
        if self.region.is_some() {
            self.errors.at(
                branch.if_token.span,
                "nested loops and branches in `forward` are not supported yet",
            );
            return;
        }
        let mut earlier: Vec<&Expr> = Vec::new();
        let mut arm = Some(branch);
        let mut last_else: Option<&syn::Block> = None;
        while let Some(current) = arm.take() {
            let cond = &*current.cond;
            let guard: Expr = syn::parse_quote!(0..usize::from(#(!(#earlier) &&)* (#cond)));
            self.region_body(guard, &current.then_branch, "an `if` arm");
            earlier.push(cond);
            match current.else_branch.as_ref().map(|(_, expr)| &**expr) {
                Some(Expr::If(next)) => arm = Some(next),
                Some(Expr::Block(block)) => last_else = Some(&block.block),
                Some(other) => self.errors.over(other, "expected a block after `else`"),
                None => {}
            }
        }
        if let Some(block) = last_else {
            let guard: Expr = syn::parse_quote!(0..usize::from(#(!(#earlier))&&*));
            self.region_body(guard, block, "the `else` arm");
        }
    }

    /// A region that runs `iter`'s number of times (a loop, or an `if` arm run 0 or 1 times).
    /// Variables the body reassigns are carried from run to run and must keep their shape.
    pub(super) fn region_body(&mut self, iter: Expr, block: &syn::Block, what: &str) {
        let looped = self.regions.len();
        let mut carried: Vec<(String, Span)> = Vec::new();
        // A name the body binds with `let` is the body's own from there on, not the outer one.
        let mut shadowed: Vec<String> = Vec::new();
        for stmt in &block.stmts {
            if let Stmt::Local(local) = stmt
                && let Some(name) = binding_name(&local.pat)
            {
                shadowed.push(name.to_string());
            }
            let target = match stmt {
                Stmt::Expr(Expr::Assign(assign), _) => Some(&*assign.left),
                Stmt::Expr(Expr::Binary(binary), _) if compound_op(binary.op).is_some() => {
                    Some(&*binary.left)
                }
                _ => None,
            };
            if let Some(name) = target.and_then(expr_ident)
                && self.locals.contains_key(&name.to_string())
                && !shadowed.contains(&name.to_string())
            {
                let key = name.to_string();
                match carried.iter_mut().find(|(n, _)| *n == key) {
                    Some(entry) => entry.1 = name.span(),
                    None => carried.push((key, name.span())),
                }
            }
        }
        self.regions.push(Region {
            iter,
            carried: Vec::new(),
        });
        let outer = self.locals.clone();
        self.region = Some(looped);
        let params: Vec<ValueId> = carried
            .iter()
            .map(|(name, _)| {
                let init = outer[name];
                let op = Op::RegionParam { init, result: init };
                let shape = self.shape(init).clone();
                let id = self.push(op, shape, format!("`{name}` in {what}"));
                self.locals.insert(name.clone(), id);
                id
            })
            .collect();
        for stmt in &block.stmts {
            match stmt {
                Stmt::Expr(expr, None) if !matches!(expr, Expr::ForLoop(_) | Expr::If(_)) => {
                    self.errors
                        .over(expr, format!("end each statement of {what} with `;`"));
                }
                other => self.statement(other),
            }
        }
        self.region = None;
        let results: Vec<ValueId> = carried.iter().map(|(name, _)| self.locals[name]).collect();
        self.locals = outer;
        for ((name, span), (&param, &result)) in carried.iter().zip(params.iter().zip(&results)) {
            let Op::RegionParam { init, .. } = self.nodes[param].op else {
                unreachable!("pushed as a loop parameter above")
            };
            if let Op::RegionParam { result: slot, .. } = &mut self.nodes[param].op {
                *slot = result;
            }
            let (before, after) = (self.shape(init).clone(), self.shape(result).clone());
            let keeps = unify_shapes(&before, &after, &mut self.assertions);
            if !keeps {
                self.errors.at(
                    *span,
                    format!(
                        "`{name}` changes shape in {what}: `{before}` before it, `{after}` after; \
                         a tensor reassigned in a loop or an `if` arm must keep its shape"
                    ),
                );
            }
            let op = Op::RegionOutput {
                region: looped,
                init,
                result,
            };
            let output = self.push(op, before, format!("`{name}` after {what}"));
            self.locals.insert(name.clone(), output);
            self.regions[looped].carried.push((param, output));
        }
    }
}
