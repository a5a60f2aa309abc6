"""The plot beside a policy file: L_t with its error band, and expected bits/dim against the budget.

Its own module so that only `ardm policy` imports matplotlib (about 0.4 s): the jobs that read policy files do not
draw them. The object API with the Agg canvas writes files without a display in half the import time of pyplot.
"""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from ardm_jax import policy as policy_lib


def plot_policy(path_png, L, L_stderr, budgets, dp_bpd, naive_bpd, num_dims):
  """Draws a policy file's plot: L_t with a +-2 stderr band, and bits/dim against budget for DP and naive.

  Args:
    path_png: the PNG to write (1100 x 400 pixels).
    L: [D] per-step losses in bits per variable.
    L_stderr: [D] their standard errors, or None for no band.
    budgets: the budgets on the x axis (log scale).
    dp_bpd: expected bits/dim of the DP policy for each budget.
    naive_bpd: expected bits/dim of the evenly spaced policy for each budget.
    num_dims: data dimensions per item (the all-steps line is L.sum() / num_dims).
  """
  L = policy_lib.validate_losses(L)
  t = np.arange(L.size)
  fig = Figure(figsize=(11, 4))
  FigureCanvasAgg(fig)
  ax0, ax1 = fig.subplots(1, 2)
  ax0.plot(t, L, lw=1, label="L_t")
  if L_stderr is not None:
    err = 2 * np.asarray(L_stderr, np.float64)
    ax0.fill_between(t, L - err, L + err, alpha=0.3, label="±2 stderr")
  ax0.set(xlabel="step t (variables known)", ylabel="bits per variable", title="per-step loss")
  ax0.legend()
  ax1.plot(budgets, dp_bpd, "o-", label="optimal (DP)")
  ax1.plot(budgets, naive_bpd, "s--", label="evenly spaced")
  ax1.axhline(L.sum() / num_dims, color="gray", lw=0.8, label=f"all {L.size} steps")
  ax1.set(xscale="log", xlabel="budget (network calls)", ylabel="expected bits/dim", title="budget vs bits/dim")
  ax1.legend()
  fig.subplots_adjust(left=0.06, right=0.99, bottom=0.13, top=0.92, wspace=0.18)  # tight_layout costs ~1 s
  fig.savefig(path_png, dpi=100)
