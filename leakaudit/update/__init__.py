"""What the server receives from a client: the simulated update, its loss and the simulated defenses."""

from .client import client_update
from .defenses import DEFENSES, apply_defenses, check_defense, parse_defense
from .interface import ClientUpdate, DefenseSpec, ThreatModel
from .losses import LOSSES, client_loss

__all__ = [
    "ClientUpdate", "DEFENSES", "DefenseSpec", "LOSSES", "ThreatModel", "apply_defenses", "check_defense",
    "client_loss", "client_update", "parse_defense",
]
