//! The reverse pass, planned from the IR: which values are live, which need a gradient, and
//! what the forward pass must save for the backward pass (and nothing more).

use std::collections::BTreeSet;

use crate::elementwise::Grad;
use crate::ir::{BinaryOp, FieldKind, Network, Node, Op, ValueId};
use crate::shape::same_shape;

/// The backward schedule.
pub struct Plan {
    /// Nodes the output depends on.
    pub live: Vec<bool>,
    /// Nodes whose gradient `backward` computes: those on a path from an input or parameter.
    pub needs_grad: Vec<bool>,
    /// Nodes whose gradient `backward_params` computes too: those on a path from a parameter.
    /// The others' gradients only the input gradients need.
    pub param_grad: Vec<bool>,
    /// Values the backward pass reads (computed nodes are moved into the tape, inputs borrowed,
    /// parameters read from `self`).
    pub saved_values: BTreeSet<ValueId>,
    /// Values whose run-time shape the backward pass reads (to undo a broadcast or a sum).
    pub saved_shapes: BTreeSet<ValueId>,
    /// Custom-function, layer and elementwise nodes whose own saved state (the function's,
    /// the layer's tape, the elementwise op's derivative) the backward pass reads.
    pub saved_functions: BTreeSet<ValueId>,
    /// Per node, the operand whose buffer it writes its result into, in `forward` and in
    /// `forward_train` (where what the tape keeps is not reused).
    pub reuse: [Vec<Option<ValueId>>; 2],
    /// The loop parameters that take over their initial value instead of copying it.
    pub loop_takes_init: BTreeSet<ValueId>,
    /// Per node, the addition whose gradient is its own (see [`Plan::shares_gradient`]): its
    /// backward rule reads that gradient instead of a copy.
    pub gradient_of: Vec<Option<ValueId>>,
    /// Per node, the addition whose gradient its adjoint takes last (see
    /// [`Plan::defers_gradient`]).
    pub deferred_from: Vec<Option<ValueId>>,
}

/// Whether `reader`, outside loops and of `id`'s shape, passes its gradient to its operand `id`
/// unchanged: an addition of two values, or a subtraction with `id` on the left.
fn passes_gradient_unchanged(net: &Network, reader: ValueId, id: ValueId) -> bool {
    let unchanged = match net.nodes[reader].op {
        Op::Binary {
            op: BinaryOp::Add,
            a,
            b,
        } => a != b,
        Op::Binary {
            op: BinaryOp::Sub,
            a,
            b,
        } => a == id && b != id,
        _ => false,
    };
    unchanged
        && net.nodes[reader].region.is_none()
        && same_shape(&net.nodes[id].shape, &net.nodes[reader].shape)
}

/// The nodes `outputs` depend on. Loops make the graph cyclic (a loop parameter reads the
/// body's result), so this runs to a fixed point; each pass only turns flags on.
pub fn live(nodes: &[Node], outputs: &[ValueId]) -> Vec<bool> {
    let mut live = vec![false; nodes.len()];
    for &output in outputs {
        live[output] = true;
    }
    let mut changed = true;
    while changed {
        changed = false;
        for id in (0..nodes.len()).rev() {
            if live[id] {
                for operand in nodes[id].op.operands() {
                    changed |= !live[operand];
                    live[operand] = true;
                }
            }
        }
    }
    live
}

/// Which live nodes a gradient flows to: those that depend on a parameter (or on an input,
/// when `inputs`). Loops make the graph cyclic, so this runs to a fixed point.
fn flow(net: &Network, live: &[bool], inputs: bool) -> Vec<bool> {
    let n = net.nodes.len();
    let mut flows = vec![false; n];
    let mut changed = true;
    while changed {
        changed = false;
        for id in 0..n {
            let reaches = live[id]
                && match net.nodes[id].op {
                    // Parameters, and those of layers, always want their gradient.
                    Op::Param(_) | Op::Layer { .. } | Op::Embed { .. } => true,
                    Op::Input(_) => inputs,
                    ref op => op.operands().iter().any(|&x| flows[x]),
                };
            changed |= reaches != flows[id];
            flows[id] = reaches;
        }
    }
    flows
}

impl Plan {
    pub fn new(net: &Network, outputs: &[ValueId]) -> Self {
        let n = net.nodes.len();
        let live = live(&net.nodes, outputs);
        let needs_grad = flow(net, &live, true);
        let param_grad = flow(net, &live, false);
        let mut plan = Self {
            live,
            needs_grad,
            param_grad,
            saved_values: BTreeSet::new(),
            saved_shapes: BTreeSet::new(),
            saved_functions: BTreeSet::new(),
            reuse: [vec![None; n], vec![None; n]],
            loop_takes_init: BTreeSet::new(),
            gradient_of: vec![None; n],
            deferred_from: vec![None; n],
        };
        for id in 0..n {
            if plan.needs_grad[id] {
                plan.record_reads(net, id);
            }
        }
        for (train, reuse) in [false, true].into_iter().zip(0..2) {
            for id in (0..n).filter(|&id| plan.live[id]) {
                plan.reuse[reuse][id] = plan.reusable_operand(net, outputs, id, train);
            }
        }
        for param in 0..n {
            if let Op::RegionParam { init, .. } = net.nodes[param].op
                && plan.last_use(net, outputs, init, param)
            {
                plan.loop_takes_init.insert(param);
            }
        }
        for id in 0..n {
            plan.gradient_of[id] = plan.shares_gradient(net, outputs, id);
        }
        for id in 0..n {
            plan.deferred_from[id] = plan.defers_gradient(net, outputs, id);
        }
        plan
    }

    /// For a value read twice, once by an addition (or subtraction, as its left operand) of
    /// its shape, all outside loops: that addition. Its gradient then goes into the value's
    /// adjoint after the other reader's (which is owned), added in place, instead of a copy
    /// made into the empty adjoint first (`h = x + f(x)` with `x` also read by `f`: the
    /// residual stream of a transformer block). Two terms add up the same either way.
    fn defers_gradient(&self, net: &Network, outputs: &[ValueId], id: ValueId) -> Option<ValueId> {
        let node = &net.nodes[id];
        let own_adjoint = !matches!(
            node.op,
            Op::Param(_) | Op::RegionParam { .. } | Op::RegionOutput { .. }
        ) && self.gradient_of[id].is_none();
        if !own_adjoint || !self.needs_grad[id] || node.region.is_some() || outputs.contains(&id) {
            return None;
        }
        let &[first, second] = self.readings(net, id).as_slice() else {
            return None;
        };
        [first, second]
            .into_iter()
            .find(|&reader| first != second && passes_gradient_unchanged(net, reader, id))
    }

    /// The addition (or subtraction, as its left operand) whose gradient is node `id`'s
    /// own, unchanged: the one node that reads `id`, outside loops, of `id`'s shape. Then
    /// `id`'s backward rule reads that gradient where it is, instead of a copy of it in an
    /// adjoint of its own (`x + f(x)` copied the output's gradient for `f`). Only for nodes
    /// whose gradient `backward_params` needs too, so that the rule runs exactly when it did.
    fn shares_gradient(&self, net: &Network, outputs: &[ValueId], id: ValueId) -> Option<ValueId> {
        let node = &net.nodes[id];
        let computed = !matches!(
            node.op,
            Op::Input(_) | Op::Param(_) | Op::RegionParam { .. } | Op::RegionOutput { .. }
        );
        if !computed || !self.param_grad[id] || node.region.is_some() || outputs.contains(&id) {
            return None;
        }
        let &[reader] = self.readings(net, id).as_slice() else {
            return None;
        };
        passes_gradient_unchanged(net, reader, id).then_some(reader)
    }

    /// The live nodes that read `id`, each once per operand it is.
    fn readings(&self, net: &Network, id: ValueId) -> Vec<ValueId> {
        (0..net.nodes.len())
            .filter(|&reader| self.live[reader])
            .flat_map(|reader| {
                let operands = net.nodes[reader].op.operands();
                let count = operands.iter().filter(|&&operand| operand == id).count();
                std::iter::repeat_n(reader, count)
            })
            .collect()
    }

    /// The node whose adjoint holds `id`'s gradient: `id` itself, or the addition it shares
    /// its gradient with, followed to the end.
    pub fn gradient_holder(&self, id: ValueId) -> ValueId {
        let mut holder = id;
        while let Some(next) = self.gradient_of[holder] {
            holder = next;
        }
        holder
    }

    /// The operand whose buffer node `id` writes its result into (or, for a layer, keeps),
    /// when training (`train`) or not; `None` when it allocates.
    pub fn writes_into(&self, id: ValueId, train: bool) -> Option<ValueId> {
        self.reuse[usize::from(train)][id]
    }

    /// An operand of node `id` that dies there and whose buffer `id` takes over: one of an
    /// elementwise node's with the result's shape (either operand of a binary op that
    /// commutes, the left one of one that does not), a reshape's, or a layer's input.
    fn reusable_operand(
        &self,
        net: &Network,
        outputs: &[ValueId],
        id: ValueId,
        train: bool,
    ) -> Option<ValueId> {
        let candidates = match net.nodes[id].op {
            // A reshape keeps the data: taking the buffer over is free whatever the shapes. A
            // layer takes over an input that dies in the call (a nested network keeps it in
            // its tape instead of a copy).
            Op::Reshape { x, .. } | Op::Layer { x, .. } => {
                return self.dies_into(net, outputs, x, id, train).then_some(x);
            }
            Op::Map { x, .. } | Op::CausalMask { x } => vec![x],
            Op::Binary { op, a, b } if a != b => match op {
                BinaryOp::Add | BinaryOp::Mul | BinaryOp::Maximum | BinaryOp::Minimum => {
                    vec![a, b]
                }
                BinaryOp::Sub | BinaryOp::Div => vec![a],
            },
            _ => return None,
        };
        candidates.into_iter().find(|&x| {
            same_shape(&net.nodes[x].shape, &net.nodes[id].shape)
                && self.dies_into(net, outputs, x, id, train)
        })
    }
    /// Whether node `id` may take over the buffer of its operand `x`: `x` is computed here (not an
    /// input, a parameter or a loop's carried value), in `id`'s loop, read by `id` alone, not an
    /// output, and, when training, not kept for the backward pass.
    fn dies_into(
        &self,
        net: &Network,
        outputs: &[ValueId],
        x: ValueId,
        id: ValueId,
        train: bool,
    ) -> bool {
        let node = &net.nodes[x];
        let computed = !matches!(
            node.op,
            Op::Input(_) | Op::Param(_) | Op::RegionParam { .. } | Op::RegionOutput { .. }
        );
        let kept = train && (self.saved_values.contains(&x) || self.saved_shapes.contains(&x));
        computed
            && node.region == net.nodes[id].region
            && self.readings(net, x) == [id]
            && !outputs.contains(&x)
            && !kept
    }

    /// Whether the loop parameter `param` is the only reader of `init` (a computed value that is
    /// neither saved, returned, nor read by any other node), so the loop may take it over instead
    /// of copying it.
    fn last_use(&self, net: &Network, outputs: &[ValueId], init: ValueId, param: ValueId) -> bool {
        // A body that reassigns a value from outside (`h = z;`) reads it every iteration.
        let result_in_body = Self::loop_result(net, param)
            .is_some_and(|result| net.nodes[result].region == net.nodes[param].region);
        let computed = result_in_body
            && net.nodes[init].region.is_none()
            && !matches!(net.nodes[init].op, Op::Input(_) | Op::Param(_));
        let kept = self.saved_values.contains(&init)
            || self.saved_shapes.contains(&init)
            || outputs.contains(&init);
        // The loop's own nodes read it: its parameter, and its output (for zero iterations).
        let other_readers = (0..net.nodes.len()).any(|id| {
            let own = id == param
                || matches!(net.nodes[id].op, Op::RegionOutput { result, .. } if Some(result) == Self::loop_result(net, param));
            self.live[id] && !own && net.nodes[id].op.operands().contains(&init)
        });
        computed && !kept && !other_readers
    }

    /// The body result of loop parameter `param`.
    fn loop_result(net: &Network, param: ValueId) -> Option<ValueId> {
        match net.nodes[param].op {
            Op::RegionParam { result, .. } => Some(result),
            _ => None,
        }
    }

    /// Records what node `id`'s backward rule reads.
    fn record_reads(&mut self, net: &Network, id: ValueId) {
        let node = &net.nodes[id];
        let needs = |x: ValueId| self.needs_grad[x];
        let broadcast = |x: ValueId| !same_shape(&net.nodes[x].shape, &node.shape);
        let (mut values, mut shapes) = (Vec::new(), Vec::new());
        match node.op {
            // The indices, which the tape keeps with the inputs.
            Op::Embed { .. }
            | Op::Input(_)
            | Op::Param(_)
            | Op::Permute { .. }
            | Op::CausalMask { .. }
            | Op::RegionParam { .. }
            | Op::RegionOutput { .. } => {}
            // Its own state: a custom function's saved values.
            Op::Custom { .. } => {
                self.saved_functions.insert(id);
            }
            // The layer's tape, and its input if its backward pass reads it.
            Op::Layer { field, x } => {
                self.saved_functions.insert(id);
                if let FieldKind::Layer(rule) = &net.fields[field].kind
                    && rule.reads_input()
                {
                    values.push(x);
                }
            }
            Op::Map { ref op, x, .. } => match op.entry.grad {
                Grad::Identity | Grad::Linear => {}
                Grad::FromInput => values.push(x),
                Grad::FromOutput => values.push(id),
                // The derivative, its state.
                Grad::Derivative => {
                    self.saved_functions.insert(id);
                }
            },
            // Softmax and log_softmax differentiate from their output.
            Op::Softmax { .. } => values.push(id),
            Op::Binary { op, a, b } => {
                for (operand, other) in [(a, b), (b, a)] {
                    if needs(operand) {
                        match op {
                            BinaryOp::Add | BinaryOp::Sub => {}
                            BinaryOp::Mul => values.push(other),
                            // The partial derivatives read both operands.
                            BinaryOp::Div | BinaryOp::Maximum | BinaryOp::Minimum => {
                                values.extend([operand, other]);
                            }
                        }
                        if broadcast(operand) {
                            shapes.push(operand);
                        }
                    }
                }
            }
            Op::Mm { a, b, .. } => {
                if needs(a) {
                    values.push(b);
                }
                if needs(b) {
                    values.push(a);
                }
            }
            Op::Sum { x } | Op::Mean { x } | Op::Reshape { x, .. } | Op::Narrow { x, .. } => {
                shapes.push(x);
            }
            // The input's shape, and max pooling's argmax (its state).
            Op::Pool { x, pool, .. } => {
                shapes.push(x);
                if pool.max {
                    self.saved_functions.insert(id);
                }
            }
        }
        for value in values {
            if !matches!(net.nodes[value].op, Op::Param(_)) {
                self.saved_values.insert(value);
            }
        }
        self.saved_shapes.extend(shapes);
    }
}
