"""What the graph says: node index, look-through to the stored weight, targets and their reduction axes, selection and profitability, channel chains."""
