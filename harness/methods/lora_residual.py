"""LoRA initialisations that rewrite the base weights (PiSSA, OLoRA, LoRA-GA): W becomes the
residual W - s·B0·A0 of a non-zero initial adapter (B0, A0), so the model still computes W at init
while the adapter starts from principal directions (PiSSA), an orthonormal basis (OLoRA) or the
gradient's (LoRA-GA).

What a user keeps must load onto the *unmodified* base, so `save` uses peft's conversion
(`save_pretrained(path_initial_model_for_weight_conversion=...)`): the artifact is a plain LoRA of
rank 2r, [A | A0] and [B | -B0], whose update B·A - B0·A0 on W equals the trained residual model.
Two things peft leaves to the caller: the initial adapter must exist as a saved adapter at save time
(it is kept in memory from the end of the initialisation and written to a temporary directory), and
the conversion returns only the LoRA tensors, dropping the trained head copy (`modules_to_save`),
which is put back, or a reloaded classifier would be the untrained one.
"""

from pathlib import Path

from harness.methods.lora import Lora

WEIGHTS = "adapter_model.safetensors"  # peft's file name


class ResidualLora(Lora):
    rewrites_base_weights = True
    identity_at_init = False  # W_res·x + s·B0·(A0·x) equals W·x only up to float rounding
    lora_init = ""  # peft's init_lora_weights for this method

    def peft_kwargs(self, ctx) -> dict:
        return {**super().peft_kwargs(ctx), "init_lora_weights": self.lora_init}

    def apply(self, model, ctx):
        model = super().apply(model, ctx)
        self.remember_initial(model)
        return model

    def remember_initial(self, model) -> None:
        """The adapter as initialised (B0, A0 and the head copy), for the conversion at save time."""
        from peft.utils import get_peft_model_state_dict
        self._initial = {k: v.detach().cpu().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}

    def save(self, model, directory) -> None:
        import tempfile

        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import load_file, save_file
        with tempfile.TemporaryDirectory() as tmp:
            initial = Path(tmp) / "initial"
            initial.mkdir()
            save_file(self._initial, str(initial / WEIGHTS))  # peft writes its config next to it
            model.save_pretrained(str(directory), path_initial_model_for_weight_conversion=str(initial))
        weights = Path(directory) / WEIGHTS
        converted = load_file(str(weights))
        dropped = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()
                   if k not in converted}  # the head copy
        save_file({**converted, **dropped}, str(weights), metadata={"format": "pt"})
