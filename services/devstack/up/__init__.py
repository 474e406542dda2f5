"""`mdmpush up`: the whole pipeline on one host, as supervised processes.

- `supervisor`: start children, restart a crashed one with backoff, stop all on a signal;
- `credentials`: the gateway's API key and webhook secret, generated once into the state dir;
- `stack`: what runs, with which environment, and what is printed for the operator.
"""
