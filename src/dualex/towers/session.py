"""The split session: everything dualex changes on a model while it explains, and nothing after.

A session is entered once per batch of projections (:meth:`dualex.towers.base.Tower.session`).
It owns three kinds of state and restores each on exit, also after an exception:

* **process-global switches** (:func:`ad_safe`): the math SDPA backend and no fused
  ``nn.MultiheadAttention`` fast path — CPU flash attention and the fast path have no forward-mode
  AD. They are reference-counted under a lock, so concurrent threads share one setting and the
  last one out restores the user's;
* **the model's mode and ``requires_grad`` flags** (:func:`model_guard`): every module in eval
  mode (no dropout) and no parameter requiring grad during the session; the user's own flags
  afterwards. Reference-counted per model, so two threads on one model nest correctly;
* **gates on the blocks** (:func:`gated`): each block is stood in for by a :class:`Gate` that
  reads a *thread-local* action — capture the hidden state at a layer, replace it, or skip the
  blocks before the split — so two threads on one model each see only their own action. Where the
  tower cannot say which module holds its blocks, forward hooks dispatch the same actions
  (without skipping).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Action",
    "Gate",
    "SharedSwitch",
    "ad_safe",
    "gated",
    "model_guard",
    "quiet_hf_bars",
    "unwrap",
]

# ---------------------------------------------------------------------------------------------
# process-global switches
# ---------------------------------------------------------------------------------------------


class SharedSwitch:
    """A process-global setting that concurrent threads share: the first thread in turns it on
    (recording the user's setting), the last one out restores it — also after an exception.

    Args:
        turn_on: Turns the setting on; returns what :attr:`restore` needs to undo it.
        restore: Puts the user's setting back, given ``turn_on``'s return value.
    """

    def __init__(self, turn_on: Callable[[], Any], restore: Callable[[Any], None]) -> None:
        self._turn_on, self._restore = turn_on, restore
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: Any = None

    @property
    def active(self) -> bool:
        """Whether any thread is inside."""
        return self._depth > 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = self._turn_on()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    saved, self._saved = self._saved, None
                    self._restore(saved)


def _ad_on() -> tuple[bool, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    kernel = sdpa_kernel(SDPBackend.MATH)
    kernel.__enter__()
    torch.backends.mha.set_fastpath_enabled(False)
    return fast, kernel


def _ad_restore(saved: tuple[bool, Any]) -> None:
    fast, kernel = saved
    try:
        kernel.__exit__(None, None, None)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


ad_safe = SharedSwitch(_ad_on, _ad_restore)
"""Math SDPA backend and no MHA fast path while any thread is inside; restored by the last.
Use as ``with ad_safe(): ...``."""


def _bars_off() -> bool:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    return was


def _bars_restore(was: bool) -> None:
    from transformers.utils import logging as hf_logging

    if was:
        hf_logging.enable_progress_bar()


quiet_hf_bars = SharedSwitch(_bars_off, _bars_restore)
"""transformers' progress bars off while any thread is inside (e.g. "Loading weights" of the
2 MB built-in model); the user's setting afterwards. Use as ``with quiet_hf_bars(): ...``."""


# ---------------------------------------------------------------------------------------------
# mode and requires_grad
# ---------------------------------------------------------------------------------------------

_GUARD_LOCK = threading.Lock()
_GUARDS: dict[int, tuple[int, list[tuple[nn.Module, bool]], list[tuple[Tensor, bool]]]] = {}


@contextlib.contextmanager
def model_guard(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and no ``requires_grad`` on ``modules`` inside; the user's flags afterwards.

    Reference-counted per module: nested and concurrent sessions on one model record its flags
    once (the first in) and restore them once (the last out).
    """
    entered: list[nn.Module] = []
    try:
        for module in dict.fromkeys(modules):  # unique, in order
            with _GUARD_LOCK:
                key = id(module)
                if key in _GUARDS:
                    depth, modes, grads = _GUARDS[key]
                    _GUARDS[key] = (depth + 1, modes, grads)
                else:
                    modes = [(m, m.training) for m in module.modules()]
                    grads = [(p, p.requires_grad) for p in module.parameters()]
                    _GUARDS[key] = (1, modes, grads)
                    module.eval()
                    for p, _ in grads:
                        p.requires_grad_(False)
            entered.append(module)
        yield
    finally:
        for module in reversed(entered):
            with _GUARD_LOCK:
                depth, modes, grads = _GUARDS[id(module)]
                if depth > 1:
                    _GUARDS[id(module)] = (depth - 1, modes, grads)
                    continue
                del _GUARDS[id(module)]
                for m, flag in modes:
                    m.training = flag
                for p, flag in grads:
                    p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# gates: thread-local capture / replace / skip on a tower's blocks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What the gates do for the current thread.

    Attributes:
        layer: The split layer ``L`` (input of block ``L``; ``num_blocks``: output of the last).
        fn: Applied to the hidden state at ``layer`` (in the block's own layout); its result is
            passed on (a capture function raises to stop the forward pass).
        skip_before: Blocks with an index below this return their input unchanged (their output
            is replaced at ``layer`` anyway); the last block too when ``layer`` is its output.
    """

    layer: int
    fn: Callable[[Tensor], Tensor]
    skip_before: int = 0


def _hidden_arg(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def _map_hidden(args: tuple, kwargs: dict, fn: Callable[[Tensor], Tensor]) -> tuple[tuple, dict]:
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    key = next(iter(kwargs))
    return args, {**kwargs, key: fn(kwargs[key])}


def _map_output(out: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(out, tuple):
        return (fn(out[0]), *out[1:])
    return fn(out)


class _Dispatch:
    """The thread-local action of one set of blocks."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._local = threading.local()

    def current(self) -> Action | None:
        return getattr(self._local, "action", None)

    @contextlib.contextmanager
    def acting(self, action: Action) -> Iterator[None]:
        previous = self.current()
        self._local.action = action
        try:
            yield
        finally:
            self._local.action = previous


class Gate(nn.Module):
    """Stands in for block ``index`` during a session; runs it as the thread's action says.

    Attribute look-ups fall through to the original block (encoders read e.g. a block's dtype).
    """

    def __init__(self, original: nn.Module, index: int, dispatch: _Dispatch) -> None:
        super().__init__()
        object.__setattr__(self, "_original", original)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_dispatch", dispatch)
        self.training = original.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        original = object.__getattribute__(self, "_original")
        action = object.__getattribute__(self, "_dispatch").current()
        if action is None:
            return original(*args, **kwargs)
        i = object.__getattribute__(self, "_index")
        last = object.__getattribute__(self, "_dispatch").count - 1
        if i < action.skip_before and i < last:
            return _hidden_arg(args, kwargs)
        if i == last and action.layer == last + 1 and action.skip_before > last:
            return action.fn(_hidden_arg(args, kwargs))  # the output is replaced anyway
        if i == action.layer:
            args, kwargs = _map_hidden(args, kwargs, action.fn)
        out = original(*args, **kwargs)
        if i == last and action.layer == last + 1:
            out = _map_output(out, action.fn)
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_original"), name)


def unwrap(module: nn.Module) -> nn.Module:
    """The original block behind a :class:`Gate` (the module itself otherwise)."""
    return object.__getattribute__(module, "_original") if isinstance(module, Gate) else module


_GATE_LOCK = threading.Lock()
_GATES: dict[tuple[int, ...], tuple[int, _Dispatch, Callable[[], None]]] = {}


def _install_gates(
    blocks: list[nn.Module], root: nn.Module, dispatch: _Dispatch
) -> Callable[[], None]:
    wanted = {id(b): i for i, b in enumerate(blocks)}
    places = [
        (parent, key, child)
        for parent in root.modules()
        for key, child in parent._modules.items()
        if child is not None and id(child) in wanted
    ]
    found = {id(child) for _, _, child in places}
    if len(found) != len(blocks):
        return _install_hooks(blocks, dispatch)
    for parent, key, child in places:
        parent._modules[key] = Gate(child, wanted[id(child)], dispatch)

    def remove() -> None:
        for parent, key, child in places:
            parent._modules[key] = child

    return remove


def _install_hooks(blocks: list[nn.Module], dispatch: _Dispatch) -> Callable[[], None]:
    """Dispatch capture/replace through forward hooks (no skipping) where no root is known."""
    handles = []
    last = len(blocks) - 1

    def pre_for(i: int) -> Callable[..., Any]:
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            action = dispatch.current()
            if action is None or action.layer != i:
                return None
            return _map_hidden(args, kwargs, action.fn)

        return pre

    def post(module: nn.Module, args: tuple, out: Any) -> Any:
        action = dispatch.current()
        if action is None or action.layer != last + 1:
            return None
        return _map_output(out, action.fn)

    for i, b in enumerate(blocks):
        handles.append(b.register_forward_pre_hook(pre_for(i), with_kwargs=True))
    handles.append(blocks[-1].register_forward_hook(post))

    def remove() -> None:
        for h in handles:
            h.remove()

    return remove


@contextlib.contextmanager
def gated(blocks: Sequence[nn.Module], root: nn.Module | None) -> Iterator[_Dispatch]:
    """Gates (or dispatching hooks) on ``blocks`` while any session on them is open.

    Yields:
        The blocks' dispatcher; ``with dispatch.acting(Action(...))`` sets this thread's action.
    """
    originals = [unwrap(b) for b in blocks]
    key = tuple(id(b) for b in originals)
    with _GATE_LOCK:
        if key in _GATES:
            depth, dispatch, remove = _GATES[key]
            _GATES[key] = (depth + 1, dispatch, remove)
        else:
            dispatch = _Dispatch(len(originals))
            if root is not None:
                remove = _install_gates(originals, root, dispatch)
            else:
                remove = _install_hooks(originals, dispatch)
            _GATES[key] = (1, dispatch, remove)
    try:
        yield dispatch
    finally:
        with _GATE_LOCK:
            depth, dispatch, remove = _GATES[key]
            if depth > 1:
                _GATES[key] = (depth - 1, dispatch, remove)
            else:
                del _GATES[key]
                remove()
