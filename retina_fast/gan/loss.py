"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 and lazy path-length regularisation.

The semantics are StyleGAN2-ADA's ``training/loss.py`` (``StyleGAN2Loss``):

- G main:  softplus(-D(A(G(z))))                      (non-saturating logistic, "Gmain")
- G reg:   pl_weight * (|J_w^T y| - a)^2 on batch // pl_batch_shrink samples, y ~ N(0, I) / sqrt(H W),
           a the running mean of the path lengths (decay pl_decay)                      ("Greg")
- D main:  softplus(D(A(G(z)))) + softplus(-D(A(x)))                                     ("Dmain")
- D reg:   gamma / 2 * |grad_x D(A(x))|^2 (R1 on the real images before augmentation)   ("Dreg")

A is the (differentiable) augmentation pipe, or the identity. With lazy regularisation the "reg"
phases run every `reg_interval` minibatches with the loss multiplied by that interval (the caller's
`gain`). Style mixing: with probability `style_mixing_prob` the w's from a random layer on are taken
from a second latent.
"""
import numpy as np
import torch

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


class StyleGAN2Loss:
    """Gradient accumulation of the StyleGAN2 losses for one phase.

    Parameters
    ----------
    G, D : torch.nn.Module
        Generator (with ``.mapping`` and ``.synthesis``) and discriminator of
        `retina_fast.gan.networks`.
    augment_pipe : callable or None
        Differentiable augmentation applied to every image D sees (ADA); None for none.
    r1_gamma : float
        R1 weight gamma (0 disables R1).
    style_mixing_prob : float
        Probability of mixing two latents in a generated batch.
    pl_weight, pl_batch_shrink, pl_decay : float, int, float
        Path-length regularisation weight (0 disables it), batch divisor and running-mean decay.
    ada : AdaController or None
        Given, it accumulates D's logits on the (augmented) real images of every D phase.
    """

    def __init__(self, G, D, augment_pipe=None, *, r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=2.0,
                 pl_batch_shrink=2, pl_decay=0.01, ada=None):
        if r1_gamma < 0 or pl_weight < 0:
            raise ValueError(f"r1_gamma and pl_weight must be >= 0, got {r1_gamma}, {pl_weight}")
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        if int(pl_batch_shrink) < 1:
            raise ValueError(f"pl_batch_shrink must be >= 1, got {pl_batch_shrink}")
        self.G, self.D, self.augment_pipe, self.ada = G, D, augment_pipe, ada
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight, self.pl_batch_shrink, self.pl_decay = float(pl_weight), int(pl_batch_shrink), float(pl_decay)
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    def state_dict(self):
        """The loss's own state (the path-length running mean), for snapshots."""
        return {"pl_mean": self.pl_mean.detach().cpu().clone()}

    def load_state_dict(self, state):
        self.pl_mean.copy_(state["pl_mean"].to(self.pl_mean.device))

    def run_G(self, z, c, update_emas=True):
        """Generated images [N, C, R, R] and their w's [N, num_ws, w_dim], with style mixing.

        The mapping's w_avg is tracked on the main latents (as StyleGAN2-ADA, which tracks it on
        every training-mode mapping call but the mixing one).
        """
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, ws.shape[1]))
            mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            # ws[:, cutoff:] = mixed[:, cutoff:] as a select, so that no host sync reads `cutoff`.
            take = (torch.arange(ws.shape[1], device=ws.device) >= cutoff).view(1, -1, 1)
            ws = torch.where(take, mixed, ws)
        img = self.G.synthesis(ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain=1.0):
        """Run `phase` on one (per-device) minibatch and backpropagate ``loss.mean() * gain``.

        Parameters
        ----------
        phase : {'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'}
        real_img : float32 [N, C, R, R] in [-1, 1]; real_c : [N, c_dim]
        gen_z : float32 [N, z_dim]; gen_c : [N, c_dim]
        gain : float
            Loss multiplier (the phase's interval for lazy regularisation).

        Returns
        -------
        dict
            Detached per-sample loss terms of this phase (name -> 1-D tensor): 'G_loss', 'pl_penalty',
            'G_reg', 'D_loss', 'D_loss_gen', 'D_loss_real', 'r1_penalty', 'D_reg', 'scores_fake',
            'scores_real', whichever the phase computed.
        """
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and self.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and self.r1_gamma != 0
        out = {}

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Gmain = torch.nn.functional.softplus(-gen_logits)  # -log(sigmoid(logits))
            loss_Gmain.mean().mul(gain).backward()
            out["scores_fake"] = gen_logits.detach().flatten()
            out["G_loss"] = loss_Gmain.detach().flatten()

        if do_Gpl:
            batch = max(1, gen_z.shape[0] // self.pl_batch_shrink)
            gen_img, gen_ws = self.run_G(gen_z[:batch], None if gen_c is None else gen_c[:batch])
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                           create_graph=True, only_inputs=True)[0]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            loss_Gpl = pl_penalty * self.pl_weight
            # The zero-weighted image term keeps every synthesis parameter in the graph (replicas
            # then all-reduce gradients of the same set of parameters).
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()
            out["pl_penalty"] = pl_penalty.detach().flatten()
            out["G_reg"] = loss_Gpl.detach().flatten()

        loss_Dgen = 0
        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Dgen = torch.nn.functional.softplus(gen_logits)  # -log(1 - sigmoid(logits))
            loss_Dgen.mean().mul(gain).backward()
            out["scores_fake"] = gen_logits.detach().flatten()
            out["D_loss_gen"] = loss_Dgen.detach().flatten()

        if do_Dmain or do_Dr1:
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c)
            if self.ada is not None:
                self.ada.accumulate(real_logits.detach())
            out["scores_real"] = real_logits.detach().flatten()
            loss_Dreal = 0
            if do_Dmain:
                loss_Dreal = torch.nn.functional.softplus(-real_logits)
                out["D_loss_real"] = loss_Dreal.detach().flatten()
                out["D_loss"] = (loss_Dgen + loss_Dreal).detach().flatten()
            loss_Dr1 = 0
            if do_Dr1:
                r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                               create_graph=True, only_inputs=True)[0]
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                out["r1_penalty"] = r1_penalty.detach().flatten()
                out["D_reg"] = loss_Dr1.detach().flatten()
            (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()
        return out
