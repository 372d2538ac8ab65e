"""OLoRA through peft: LoRA whose A and B start as the QR factors of W's first r columns (an
orthonormal basis), with the base weight rewritten to the residual W - s·B0·A0 (saved as a plain
LoRA on the unmodified base: lora_residual.py)."""

from harness.methods import register
from harness.methods.lora_residual import ResidualLora


@register
class Olora(ResidualLora):
    kind = "olora"
    lora_init = "olora"
