// An experiment's two arms, as the server names them (each planned run's `arm`; the keys
// of a cell's `arms`). Their home is the server's `ArmName` (model/config.py), in its
// order; this is the page's copy, which tests/server/test_status.py keeps in step with it.

export const Arm = Object.freeze({ BN: "bn", NO_BN: "no_bn" });

/** The order arms are shown in, everywhere: BN first (as the server orders a cell's runs). */
export const ARM_ORDER = Object.freeze([Arm.BN, Arm.NO_BN]);

/** What the page calls each arm. */
export const ARM_NAME = Object.freeze({ [Arm.BN]: "BN", [Arm.NO_BN]: "no BN" });
