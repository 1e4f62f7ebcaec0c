"""`labcloud`: a virsh-like command-line client of the labcloud API."""
