"""The networks: EDM preconditioning around EDM2's magnitude-preserving U-Net or EDM's DDPM++
U-Net, and the parts they share.
"""
