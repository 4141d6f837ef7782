"""The oracle MILP's formulation (MODEL.md §3-§5): variables, one ``add_*`` per constraint family, objective.

All three act on a :class:`Model` (the PuLP problem and its variables, keyed by absolute period).

Sign conventions: every power variable is >= 0 and in MW, averaged over a period of ``dt_h`` hours;
energies are ``power * dt_h`` in MWh; money is USD; emissions are tCO2. A site's power balance reads
``load + charge + export = renewable_used + gen + discharge + import``.

Each family reads only the :class:`Model` (its scenario, periods and flags) and adds its named rows;
:func:`oracle.model.build_model` checks the inputs and calls them in order, once per scenario of a
scenario dimension (:func:`add_nonanticipativity` ties the scenarios together).

Variables that can only be zero are not created (a start outside its job's window or at an
ineligible site, a serve on a non-route, a battery of zero capacity, a generator of zero capacity, an
export whose price is not positive, renewable use where none is available); the import/export
binary ``g`` is only created in periods where it can matter (see :func:`add_grid`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pulp

from envs.scenario import Scenario

RENEWABLE_EPS_MW = 1e-9
"""Renewable availability at or below this (e.g. 1e-16 MW at sunrise) gets no variable (treated as 0)."""

Key2 = tuple[int, int]
Key3 = tuple[int, int, int]


@dataclass
class Model:
    """A built MILP and its variables, keyed by absolute period ``t`` in ``t0 .. t_end - 1``.

    Dictionaries hold only the variables that exist; a missing key means the quantity is 0.
    ``held_gpus`` / ``held_mw`` (S, n) are the GPUs and IT MW of jobs started before ``t0`` that are
    still running; ``soc0_mwh`` (S,) is the state of charge at the end of ``t0 - 1``.
    """

    prob: pulp.LpProblem
    scenario: Scenario
    config: str
    t0: int
    t_end: int
    objective: str
    start: dict[Key3, pulp.LpVariable] = field(default_factory=dict)
    serve: dict[Key3, pulp.LpVariable] = field(default_factory=dict)
    unserved: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    gen: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    charge: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    discharge: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    soc: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    grid_import: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    grid_export: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    renewable_used: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    b: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    g: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    busy: dict[Key2, pulp.LpVariable] = field(default_factory=dict)
    it_mw: dict[Key2, pulp.LpAffineExpression] = field(default_factory=dict)
    emissions: pulp.LpAffineExpression | None = None
    held_gpus: np.ndarray | None = None
    held_mw: np.ndarray | None = None
    soc0_mwh: np.ndarray | None = None
    terminal_soc_mwh: np.ndarray | None = None
    budget_remaining_t: float | None = None
    started_before: frozenset[int] = frozenset()
    fixed_workload: bool = False
    battery_binary: bool = False
    suffix: str = ""
    """Appended to every variable and row name: ``""`` for one scenario, ``_w00``, ``_w01``, … else."""
    members: list[Model] = field(default_factory=list)
    """The other scenarios' sub-models (same ``prob``), with a scenario dimension; see
    :func:`oracle.model.build_model`'s ``scenarios``. This model is scenario 0, whose plan
    :func:`oracle.solve.extract` reads."""
    nonanticipative_periods: int = 0
    shared_starts: bool = False

    @property
    def periods(self) -> range:
        return range(self.t0, self.t_end)

    @property
    def n(self) -> int:
        return self.t_end - self.t0

    def integer_variables(self) -> list[pulp.LpVariable]:
        """Every binary variable (job starts, battery mode ``b``, grid direction ``g``), of every scenario."""
        own = [*self.start.values(), *self.b.values(), *self.g.values()]
        return own + [var for member in self.members for var in member.integer_variables()]

    @property
    def scenario_models(self) -> list[Model]:
        """Scenario 0 (this model) and the other scenarios' sub-models, in scenario order."""
        return [self, *self.members]


def _add(m: Model, expr: pulp.LpAffineExpression, sense: int, rhs: float, name: str) -> None:
    """Add the row ``name`` (plus the model's scenario suffix) to ``m.prob``."""
    m.prob.addConstraint(pulp.LpConstraint(expr, sense, name + m.suffix, rhs))


def _var(
    m: Model, name: str, low: float | None = None, up: float | None = None, cat: str = pulp.LpContinuous
) -> pulp.LpVariable:
    """A new variable ``name`` (plus the model's scenario suffix) of ``m.prob``."""
    return m.prob.add_variable(name + m.suffix, low, up, cat)


def add_variables(m: Model, workload: tuple[list[Key3], np.ndarray] | None) -> None:
    """Create the decision variables of MODEL.md §3 with their tight bounds.

    - ``start[j,s,t]`` ∈ {0,1} for eligible s, ``max(release, t0) <= t <= min(latest_start, t_end-1)``,
      jobs not already started; with a fixed workload only the rule's starts exist, fixed to 1;
    - ``serve[k,s,t]`` ∈ [0, min(demand, gpu_capacity)] GPUs on routes only (fixed with a workload);
      ``unserved[k,t]`` ∈ [0, demand] GPUs;
    - ``gen`` ∈ [0, gen_capacity_mw]; ``charge`` ∈ [0, charge_mw], ``discharge`` ∈ [0, discharge_mw]
      and ``soc`` ∈ [soc_min, soc_max] MWh when ``capacity_mwh > 0``;
      ``grid_import`` ∈ [0, import_limit_mw]; ``grid_export`` ∈ [0, export_limit_mw] only when
      ``price_export > 0`` (the env never exports at a non-positive price: it curtails);
      ``renewable_used`` ∈ [0, renewable_mw] where ``renewable_mw > RENEWABLE_EPS_MW``.
    """
    sc = m.scenario
    cont, binary = pulp.LpContinuous, pulp.LpBinary
    if workload is None:
        for j, job in enumerate(sc.jobs):
            if j in m.started_before:
                continue
            first, last = max(job.release, m.t0), min(job.latest_start, m.t_end - 1)
            for s in range(sc.S):
                if not job.eligible[s] or job.gpus > sc.sites[s].gpu_capacity:
                    continue
                for t in range(first, last + 1):
                    m.start[j, s, t] = _var(m, f"start_j{j:03d}_s{s:02d}_t{t:03d}", cat=binary)
    else:
        starts, _ = workload
        for j, s, t in starts:
            var = _var(m, f"start_j{j:03d}_s{s:02d}_t{t:03d}", cat=binary)
            var.lowBound = 1  # after construction: PuLP resets a binary's bounds to 0..1
            m.start[j, s, t] = var
    for k in range(sc.K):
        for t in m.periods:
            demand = float(sc.demand_gpus[k, t])
            for s in range(sc.S):
                if not sc.routes[k, s]:
                    continue
                name = f"serve_k{k:02d}_s{s:02d}_t{t:03d}"
                if workload is None:
                    ub = min(demand, float(sc.sites[s].gpu_capacity))
                    m.serve[k, s, t] = _var(m, name, 0.0, ub, cont)
                else:
                    value = float(workload[1][k, s, t])
                    m.serve[k, s, t] = _var(m, name, value, value, cont)
            m.unserved[k, t] = _var(m, f"unserved_k{k:02d}_t{t:03d}", 0.0, demand, cont)
    for s, site in enumerate(sc.sites):
        for t in m.periods:
            key = (s, t)
            tag = f"s{s:02d}_t{t:03d}"
            if site.gen_capacity_mw > 0:
                m.gen[key] = _var(m, f"gen_{tag}", 0.0, site.gen_capacity_mw, cont)
            if site.capacity_mwh > 0:
                m.charge[key] = _var(m, f"charge_{tag}", 0.0, site.charge_mw, cont)
                m.discharge[key] = _var(m, f"discharge_{tag}", 0.0, site.discharge_mw, cont)
                m.soc[key] = _var(m, f"soc_{tag}", site.soc_min_mwh, site.soc_max_mwh, cont)
            if site.import_limit_mw > 0:
                m.grid_import[key] = _var(m, f"import_{tag}", 0.0, site.import_limit_mw, cont)
            if site.export_limit_mw > 0 and sc.price_export[s, t] > 0:
                m.grid_export[key] = _var(m, f"export_{tag}", 0.0, site.export_limit_mw, cont)
            if sc.renewable_mw[s, t] > RENEWABLE_EPS_MW:
                m.renewable_used[key] = _var(m, f"renewable_{tag}", 0.0, float(sc.renewable_mw[s, t]), cont)


def add_job_assignment(m: Model) -> None:
    """§4.1 Each job starts at most once: ``Σ_{s,t} start[j,s,t] <= 1`` (``= 1`` if mandatory).

    Jobs already started before ``t0`` have no start variables. A mandatory job must start in the
    modelled periods only if its latest start is among them (in a window it may still start later).
    A mandatory job with no start variable left then gets an empty ``= 1`` row, which makes the
    model infeasible on purpose (the diagnosis names the job).
    """
    if m.fixed_workload:
        return
    sc = m.scenario
    by_job: dict[int, list[pulp.LpVariable]] = defaultdict(list)
    for (j, _, _), var in m.start.items():
        by_job[j].append(var)
    for j, job in enumerate(sc.jobs):
        if j in m.started_before:
            continue
        expr = pulp.LpAffineExpression([(var, 1.0) for var in by_job.get(j, [])])
        if job.mandatory and job.latest_start < m.t_end:
            _add(m, expr, pulp.LpConstraintEQ, 1.0, f"once_j{j:03d}")
        elif by_job.get(j):
            _add(m, expr, pulp.LpConstraintLE, 1.0, f"once_j{j:03d}")


def add_inference_balance(m: Model) -> None:
    """§4.2 ``Σ_s serve[k,s,t] + unserved[k,t] = demand_gpus[k,t]`` (GPUs)."""
    sc = m.scenario
    for k in range(sc.K):
        for t in m.periods:
            terms = [(m.serve[k, s, t], 1.0) for s in range(sc.S) if (k, s, t) in m.serve]
            terms.append((m.unserved[k, t], 1.0))
            _add(
                m,
                pulp.LpAffineExpression(terms),
                pulp.LpConstraintEQ,
                float(sc.demand_gpus[k, t]),
                f"inference_k{k:02d}_t{t:03d}",
            )


def _running_terms(m: Model, weight: np.ndarray) -> dict[Key2, list[tuple[pulp.LpVariable, float]]]:
    """``Σ_j weight[j,s]·running[j,s,t]`` as term lists per (s, t), with
    ``running[j,s,t] = Σ_{τ = t-duration[j]+1 .. t} start[j,s,τ]`` (a start in τ occupies τ..τ+d-1)."""
    sc = m.scenario
    rows: dict[Key2, list[tuple[pulp.LpVariable, float]]] = defaultdict(list)
    for (j, s, tau), var in m.start.items():
        w = float(weight[j, s])
        for t in range(tau, min(tau + sc.jobs[j].duration, m.t_end)):
            rows[s, t].append((var, w))
    return rows


def add_gpu_capacity(m: Model) -> None:
    """§4.3 GPUs busy at a site: ``busy[s,t] = Σ_j gpus[j]·running[j,s,t] + Σ_k serve[k,s,t]`` with
    ``0 <= busy[s,t] <= gpu_capacity[s] - held_gpus[s,t]`` (GPUs; ``held_gpus`` are jobs started
    before ``t0``).

    One aggregated row per site and period. ``busy`` is a variable because IT power is proportional
    to it (§4.4): the power balance then holds one ``busy`` entry instead of repeating every start
    of every running job, which halves the start variables' nonzeros.
    """
    sc = m.scenario
    gpus = np.array([[job.gpus] * sc.S for job in sc.jobs], dtype=float).reshape(sc.J, sc.S)
    rows = _running_terms(m, gpus)
    for s, site in enumerate(sc.sites):
        for i, t in enumerate(m.periods):
            tag = f"s{s:02d}_t{t:03d}"
            free = max(0.0, float(site.gpu_capacity) - float(m.held_gpus[s, i]))
            busy = m.busy[s, t] = _var(m, f"busy_{tag}", 0.0, free, pulp.LpContinuous)
            terms = [(busy, 1.0), *((var, -coef) for var, coef in rows.get((s, t), []))]
            terms += [(m.serve[k, s, t], -1.0) for k in range(sc.K) if (k, s, t) in m.serve]
            _add(m, pulp.LpAffineExpression(terms), pulp.LpConstraintEQ, 0.0, f"gpus_{tag}")


def add_it_power(m: Model) -> None:
    """§4.4 ``it[s,t] = base_it_mw[s] + gpu_power_kw[s]/1000·(held_gpus[s,t] + busy[s,t])`` (MW),
    i.e. ``base_it_mw + held_mw + Σ_j P[j,s]·running[j,s,t] + Σ_k serve[k,s,t]·gpu_power_kw/1000``
    since ``P[j,s] = gpus[j]·gpu_power_kw[s]/1000``; kept as an expression (no variable, no row).

    §4.5 (cooling) is applied where it is used: ``load[s,t] = (1 + cooling[s,t])·it[s,t]``.
    """
    sc = m.scenario
    for s, site in enumerate(sc.sites):
        for i, t in enumerate(m.periods):
            m.it_mw[s, t] = pulp.LpAffineExpression(
                [(m.busy[s, t], float(sc.gpu_mw[s]))], constant=site.base_it_mw + float(m.held_mw[s, i])
            )


def add_power_balance(m: Model) -> None:
    """§4.5-4.6 ``(1 + cooling[s,t])·it[s,t] + charge + grid_export
    = renewable_used + gen + discharge + grid_import`` (MW), ``0 <= renewable_used <= renewable_mw``.

    Left: what the site consumes or sends out; right: what it generates or takes in.
    """
    sc = m.scenario
    for s in range(sc.S):
        for t in m.periods:
            key = (s, t)
            expr = (1.0 + float(sc.cooling[s, t])) * m.it_mw[key]
            terms = [(m.charge.get(key), 1.0), (m.grid_export.get(key), 1.0)]
            terms += [(m.renewable_used.get(key), -1.0), (m.gen.get(key), -1.0)]
            terms += [(m.discharge.get(key), -1.0), (m.grid_import.get(key), -1.0)]
            expr = expr + pulp.LpAffineExpression([(v, c) for v, c in terms if v is not None])
            _add(m, expr, pulp.LpConstraintEQ, 0.0, f"balance_s{s:02d}_t{t:03d}")


def add_battery(m: Model) -> None:
    """§4.7 State of charge (MWh) and mode, for sites with ``capacity_mwh > 0``:

    ``soc[s,t] = soc[s,t-1] + (eta_charge·charge[s,t] - discharge[s,t]/eta_discharge)·dt_h`` with
    ``soc[s,t0-1] = soc0_mwh[s]`` (``soc_init_frac·capacity_mwh`` at t0 = 0); bounds on the variable;
    terminal ``soc[s,t_end-1] >= terminal_soc_mwh[s]``; and never charging and discharging at once.

    Mode, with ``battery_binary=True`` (MODEL.md's form): ``charge <= charge_mw·b``,
    ``discharge <= discharge_mw·(1 - b)``, ``b`` binary. By default (``battery_binary=False``) ``b``
    is projected out, leaving its LP hull ``charge/charge_mw + discharge/discharge_mw <= 1``: a
    relaxation of §4.7 with the same LP bound and 1 binary fewer per site and period. Its solutions
    are made exclusive after the solve (:func:`oracle.recompute.net_battery`): where both are positive,
    lowering charge by δ and discharge by ``eta_charge·eta_discharge·δ`` keeps every SoC, lowers
    degradation by ``degradation·(1 + eta_c·eta_d)·δ·dt_h`` and frees ``(1 - eta_c·eta_d)·δ`` MW,
    which the grid completion absorbs by importing less, exporting more or curtailing — so the
    objective does not fall and emissions do not rise. The relaxation's dual bound stays valid. If
    the freed power cannot be absorbed (nothing is imported, generated or taken from renewables and
    export is at its limit), :func:`oracle.solve.solve` rebuilds the model with ``b``.
    """
    sc = m.scenario
    for s, site in enumerate(sc.sites):
        if site.capacity_mwh <= 0:
            continue
        prev: pulp.LpVariable | float = float(m.soc0_mwh[s])
        for t in m.periods:
            key, tag = (s, t), f"s{s:02d}_t{t:03d}"
            ch, dis, soc = m.charge[key], m.discharge[key], m.soc[key]
            dyn = soc - prev - sc.dt_h * site.eta_charge * ch + (sc.dt_h / site.eta_discharge) * dis
            _add(m, dyn, pulp.LpConstraintEQ, 0.0, f"soc_{tag}")
            if site.charge_mw <= 0 or site.discharge_mw <= 0:
                pass  # one direction is fixed at 0 by its bound: nothing to exclude
            elif m.battery_binary:
                b = m.b[key] = _var(m, f"bmode_{tag}", cat=pulp.LpBinary)
                _add(m, ch - site.charge_mw * b, pulp.LpConstraintLE, 0.0, f"chmode_{tag}")
                _add(
                    m,
                    dis + site.discharge_mw * b,
                    pulp.LpConstraintLE,
                    site.discharge_mw,
                    f"dismode_{tag}",
                )
            else:
                hull = (1.0 / site.charge_mw) * ch + (1.0 / site.discharge_mw) * dis
                _add(m, hull, pulp.LpConstraintLE, 1.0, f"mode_{tag}")
            prev = soc
        _add(
            m,
            pulp.LpAffineExpression([(prev, 1.0)]),
            pulp.LpConstraintGE,
            float(m.terminal_soc_mwh[s]),
            f"terminal_s{s:02d}",
        )


def grid_binary_needed(sc: Scenario, s: int, t: int) -> bool:
    """Whether the import/export binary ``g[s,t]`` of §4.8 can change the optimum.

    It is not needed when ``price_export[s,t] <= price_import[s,t]`` and
    ``price_import[s,t] + carbon_price·carbon_intensity[s,t] >= 0``. Proof: take any feasible point
    that imports and exports at once, or curtails renewables while importing. Lowering import and
    export by the same δ keeps the balance and every limit, changes the objective by
    ``δ·(price_import - price_export + carbon_price·ci)·dt_h >= 0`` and lowers emissions (so the
    budget still holds). Using δ more renewable output and importing δ less changes the objective by
    ``δ·(price_import + carbon_price·ci)·dt_h >= 0`` and lowers emissions. Both moves leave every
    integer variable unchanged, so from any solution they reach one, at least as good, in which
    import and export are exclusive and no renewable is curtailed while importing — exactly what
    ``g`` enforces. :func:`oracle.recompute.complete_grid` applies these moves after the solve (they
    only change anything in ties, since a strict gain contradicts LP optimality of the polished
    solution).
    """
    pi, pe = float(sc.price_import[s, t]), float(sc.price_export[s, t])
    return pe > pi or pi + sc.carbon_price_usd_per_t * float(sc.carbon_intensity[s, t]) < 0


def add_grid(m: Model) -> None:
    """§4.8 Grid exchange (MW): ``grid_import <= import_limit_mw·g``,
    ``grid_export <= export_limit_mw·(1 - g)``, self-consumption ``renewable_used >= renewable_mw·g``.

    The limits themselves are variable bounds. The binary ``g[s,t]`` and its three rows are only
    created where :func:`grid_binary_needed` says they can matter and both directions exist.
    """
    sc = m.scenario
    for s, site in enumerate(sc.sites):
        for t in m.periods:
            key, tag = (s, t), f"s{s:02d}_t{t:03d}"
            imp, exp = m.grid_import.get(key), m.grid_export.get(key)
            if imp is None or not grid_binary_needed(sc, s, t):
                continue
            if exp is None and key not in m.renewable_used:
                continue
            g = m.g[key] = _var(m, f"gdir_{tag}", cat=pulp.LpBinary)
            _add(m, imp - site.import_limit_mw * g, pulp.LpConstraintLE, 0.0, f"gimp_{tag}")
            if exp is not None:
                _add(
                    m,
                    exp + site.export_limit_mw * g,
                    pulp.LpConstraintLE,
                    site.export_limit_mw,
                    f"gexp_{tag}",
                )
            if key in m.renewable_used:
                ren = float(sc.renewable_mw[s, t])
                _add(m, m.renewable_used[key] - ren * g, pulp.LpConstraintGE, 0.0, f"selfuse_{tag}")


def add_emissions(m: Model) -> None:
    """§4.9 Emissions (tCO2) ``E = Σ_{s,t} (carbon_intensity·grid_import + gen_emissions·gen)·dt_h``
    and, when a budget is set, ``E <= carbon_budget_t - emissions already emitted before t0``.
    Exported energy earns no credit."""
    sc = m.scenario
    terms = [(var, float(sc.carbon_intensity[s, t]) * sc.dt_h) for (s, t), var in m.grid_import.items()]
    terms += [(var, sc.sites[s].gen_emissions_t_per_mwh * sc.dt_h) for (s, t), var in m.gen.items()]
    m.emissions = pulp.LpAffineExpression([(v, c) for v, c in terms if c != 0.0])
    if m.budget_remaining_t is not None:
        _add(m, m.emissions, pulp.LpConstraintLE, m.budget_remaining_t, "carbon_budget")


def set_objective(m: Model) -> None:
    """§5 Maximise total operational benefit (USD) over the modelled periods::

        Σ value_usd[j]·start[j,s,t] + Σ revenue[k]·serve[k,s,t]·dt_h - Σ penalty[k]·unserved[k,t]·dt_h
        + Σ (price_export·grid_export - price_import·grid_import - gen_cost·gen
             - degradation·(charge + discharge))·dt_h - carbon_price·E

    With ``objective="emissions"`` the model instead minimises ``E`` (used to diagnose budgets).
    With N scenarios (:func:`oracle.model.build_model`'s ``scenarios``) the objective is the mean
    over them, ``(1/N)·Σ_w benefit_w`` (sample average), built from the same terms per scenario.
    """
    models = m.scenario_models
    weight = 1.0 / len(models)
    if m.objective == "emissions":
        m.prob.sense = pulp.LpMinimize
        total = m.emissions if len(models) == 1 else pulp.lpSum(weight * w.emissions for w in models)
        m.prob.setObjective(total)
        return
    m.prob.sense = pulp.LpMaximize
    if len(models) == 1:
        m.prob.setObjective(_benefit(m))
    else:
        m.prob.setObjective(pulp.lpSum(weight * _benefit(w) for w in models))


def _benefit(m: Model) -> pulp.LpAffineExpression:
    """The §5 benefit (USD) of one scenario's variables."""
    sc, dt = m.scenario, m.scenario.dt_h
    terms: list[tuple[pulp.LpVariable, float]] = []
    terms += [(var, sc.jobs[j].value_usd) for (j, _, _), var in m.start.items()]
    rev = sc.class_array("revenue_usd_per_gpu_h")
    pen = sc.class_array("unserved_penalty_usd_per_gpu_h")
    terms += [(var, rev[k] * dt) for (k, _, _), var in m.serve.items()]
    terms += [(var, -pen[k] * dt) for (k, _), var in m.unserved.items()]
    terms += [(var, float(sc.price_export[s, t]) * dt) for (s, t), var in m.grid_export.items()]
    terms += [(var, -float(sc.price_import[s, t]) * dt) for (s, t), var in m.grid_import.items()]
    terms += [(var, -sc.sites[s].gen_cost_usd_per_mwh * dt) for (s, _), var in m.gen.items()]
    for battery in (m.charge, m.discharge):
        terms += [(var, -sc.sites[s].degradation_usd_per_mwh * dt) for (s, _), var in battery.items()]
    objective = pulp.LpAffineExpression([(v, c) for v, c in terms if c != 0.0])
    if sc.carbon_price_usd_per_t:
        objective = objective - sc.carbon_price_usd_per_t * m.emissions
    return objective


def add_nonanticipativity(m: Model) -> None:
    """Decisions of periods ``t0 .. t0 + nonanticipative_periods - 1`` are shared by all scenarios:
    ``x_w[key] = x_0[key]`` for every scenario ``w >= 1`` and every job start, served GPUs (routing),
    battery charge and discharge and generator output of those periods (rows ``na01_<name>``).
    A variable that exists in only one of the two scenarios (e.g. a serve bound of 0 by demand)
    is fixed to 0 instead, since the shared decision must be feasible in both.

    Grid import, export and renewable use are not decisions: the environment completes them from
    the shared load (MODEL.md §7), so they stay per scenario. With ``shared_starts`` the job starts
    of all modelled periods are shared."""
    first = range(m.t0, min(m.t_end, m.t0 + m.nonanticipative_periods))
    for w, member in enumerate(m.members, start=1):
        for table in ("start", "serve", "charge", "discharge", "gen"):
            mine, base = getattr(member, table), getattr(m, table)
            every = table == "start" and m.shared_starts
            keys = sorted({k for k in (*mine, *base) if every or k[-1] in first})
            for key in keys:
                a, b = mine.get(key), base.get(key)
                var = a if a is not None else b
                expr = pulp.LpAffineExpression([(v, c) for v, c in ((a, 1.0), (b, -1.0)) if v is not None])
                m.prob.addConstraint(
                    pulp.LpConstraint(expr, pulp.LpConstraintEQ, f"na{w:02d}_{var.name}", 0.0)
                )
