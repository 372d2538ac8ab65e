"""Shared plumbing for methods that come from peft: explicit targets, get_peft_model, peft save/load.

task_type is SEQ_CLS: only then does the forward pass go through the tuner model (a plain
PeftModel calls the transformers model directly, which silently drops AdaLoRA's orthogonal
regulariser). SEQ_CLS always puts the classifier in `modules_to_save`, so when the head policy
freezes it, its trainable copy is frozen again here; the harness checks the policy afterwards.
"""

from harness.methods.base import ApplyContext, Method
from harness.methods.targets import resolve_targets


class PeftMethod(Method):
    library = "peft"

    @classmethod
    def check_against_model(cls, mcfg, model) -> None:
        """The target modules must match some linear layer of the model (resolved on its meta copy)."""
        model.targets(mcfg.target_modules)

    def resolve(self, model):
        """Explicit names of the modules this config adapts on `model` (default: the linears that
        method.target_modules selects)."""
        return resolve_targets(model, self.cfg.target_modules)

    def peft_config(self, targets, ctx: ApplyContext):
        """The peft config for these explicit target module names."""
        raise NotImplementedError

    def describe(self, model, targets) -> dict:
        """Extra inferred settings to record (scale, feed-forward modules, ...)."""
        return {}

    def apply(self, model, ctx: ApplyContext):
        from peft import get_peft_model
        targets = self.resolve(model)
        self.inferred.update(target_modules=targets, n_target_modules=len(targets))
        self.inferred.update(self.describe(model, targets))
        peft_model = get_peft_model(model, self.peft_config(targets, ctx))
        for name in ctx.head_frozen:
            for pname, p in peft_model.named_parameters():
                if f"{name}.modules_to_save." in pname:
                    p.requires_grad_(False)
        return peft_model

    @staticmethod
    def head_kwargs(ctx: ApplyContext) -> dict:
        """peft kwargs every peft method passes: sequence classification, head modules to train."""
        return {"task_type": "SEQ_CLS", "modules_to_save": list(ctx.head_train) or None}

    def save(self, model, directory) -> None:
        model.save_pretrained(str(directory))

    def load(self, base_model, directory, ctx: ApplyContext):
        from peft import PeftModel
        return PeftModel.from_pretrained(base_model, str(directory))
