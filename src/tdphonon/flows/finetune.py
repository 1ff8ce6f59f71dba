"""Makers for fine-tuning a potential and for SSCHA campaigns with the fine-tuned model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Job, Maker
from pymatgen.core import Structure

from tdphonon.flows.sscha import SSCHAMaker
from tdphonon.jobs.finetune import finetune_job
from tdphonon.potentials import PotentialSpec

__all__ = ["FineTuneMaker", "FineTuneSSCHAMaker"]


@dataclass
class FineTuneMaker(Maker):
    """Fine-tune a pretrained potential on DFT phonon force sets, as one job.

    The job's output is a :class:`~tdphonon.schemas.FineTuneDoc`; ``job.output.model`` is the
    reference of the stored model to pass on, e.g. ``SSCHAMaker(model=job.output.model)``.

    Parameters
    ----------
    name : str
        Job name (also the model's name).
    base_model : str, optional
        Pretrained matgl model folder or hub name; None: ``$TDPHONON_MODEL`` on the worker, else the pretrained M3GNet.
    validation : list of str, optional
        Validation compounds (force-set names); otherwise a seeded split by compound.
    validation_fraction : float
        Fraction of compounds held out for validation when ``validation`` is None.
    settings : dict
        Keyword arguments of :class:`tdphonon.finetune.FineTuneSettings` (epochs, lr, weights,
        trainable layers, seed, ...).
    """

    name: str = "finetune"
    base_model: str | None = None
    validation: list[str] | None = None
    validation_fraction: float = 0.2
    settings: dict[str, Any] = field(default_factory=dict)

    def make(self, data: Sequence[Any], validation: Sequence[str] | None = None) -> Job:
        """Make the fine-tuning job.

        Parameters
        ----------
        data : sequence of path-like or dict
            Force-set files or folders (as paths on the worker), or ``{"jobstore": {...}}``
            queries of atomate2 phonon outputs in the store (see
            :func:`tdphonon.jobs.finetune.finetune_job`).
        validation : sequence of str, optional
            Overrides ``self.validation``.

        Returns
        -------
        Job
            Output :class:`~tdphonon.schemas.FineTuneDoc`.
        """
        from tdphonon.finetune import FineTuneSettings

        FineTuneSettings(**self.settings)  # fail early on bad settings
        items = [item if isinstance(item, dict) else str(item) for item in data]
        if not items:
            raise ValueError("no fine-tuning data given")
        validation = validation if validation is not None else self.validation
        base_model = None if self.base_model is None else str(self.base_model)
        new = finetune_job(
            items,
            base_model=PotentialSpec(base_model),  # None: the default model of the worker
            validation=None if validation is None else list(validation),
            validation_fraction=self.validation_fraction,
            settings=dict(self.settings),
            name=self.name,
        )
        new.name = self.name
        return new


@dataclass
class FineTuneSSCHAMaker(Maker):
    """Fine-tune once, then temperature-dependent phonons of many crystals with that model.

    Parameters
    ----------
    name : str
        Flow name.
    finetune_maker : FineTuneMaker
        The fine-tuning step.
    sscha_maker : SSCHAMaker
        Template for every crystal (its ``model`` is replaced by the fine-tuned one).
    """

    name: str = "finetune + sscha"
    finetune_maker: FineTuneMaker = field(default_factory=FineTuneMaker)
    sscha_maker: SSCHAMaker = field(default_factory=SSCHAMaker)

    def make(
        self,
        data: Sequence[Any],
        structures: Sequence[Structure],
        temperatures: Sequence[float] = (300.0,),
    ) -> Flow:
        """Make the flow: one fine-tuning job, then one SSCHA flow per structure.

        Parameters
        ----------
        data : sequence
            Fine-tuning data (see :meth:`FineTuneMaker.make`).
        structures : sequence of Structure
            Crystals for the SSCHA.
        temperatures : sequence of float
            Temperatures, K.

        Returns
        -------
        Flow
            Output: ``{"finetune": FineTuneDoc, "sscha": [list of SSCHATemperatureDoc per
            structure]}``.
        """
        if not structures:
            raise ValueError("no structures given")
        tune = self.finetune_maker.make(data)
        jobs: list[Job | Flow] = [tune]
        sscha_maker = dataclasses.replace(self.sscha_maker, model=tune.output.model)
        for structure in structures:  # each make() checks its structure and settings
            child = sscha_maker.make(structure, temperatures)
            child.name = f"sscha {structure.composition.reduced_formula}"
            jobs.append(child)
        return Flow(
            jobs,
            output={"finetune": tune.output, "sscha": [j.output for j in jobs[1:]]},
            name=self.name,
        )
