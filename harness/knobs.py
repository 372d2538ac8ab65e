"""The method knobs that tell two configurations of one method apart (tables, W&B run names)."""

KNOBS = ("variant", "r", "alpha", "target_modules", "prefix_positions", "suffix_positions", "init_r", "target_r",
         "sparsity")


def knobs(method: dict) -> dict:
    """{knob: value} for the knobs this method config has (LR and seed are axes, not knobs)."""
    return {k: method[k] for k in KNOBS if k in method and method[k] is not None}


def knob_label(method: dict) -> str:
    """'r8 a16 all_linear', 'r1 p3+s0', 'r12->4 a16', ... (empty for FullFT/BitFit). Alpha is part of
    it: two LoRA runs that differ only in alpha are different configurations."""
    k = knobs(method)
    parts = []
    if "target_r" in k:
        parts.append(f"r{k['init_r']}->{k['target_r']}")
    elif "r" in k:
        parts.append(f"r{k['r']}")
    if "alpha" in k:
        parts.append(f"a{k['alpha']:g}")
    if "prefix_positions" in k:
        parts.append(f"p{k['prefix_positions']}+s{k.get('suffix_positions', 0)}")
    if "target_modules" in k:
        parts.append(str(k["target_modules"]))
    if "sparsity" in k:
        parts.append(f"s{k['sparsity']:g}")
    return " ".join(parts)
