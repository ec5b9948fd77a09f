"""eqxrl's algorithms, one self-contained file each, installed as `eqxrl.algorithms.<name>`.

Each file runs as a script (`python algorithms/sac.py --help`) and imports as a module
(`from eqxrl.algorithms import sac`); see the README's "Writing an algorithm" for the contract.
"""
