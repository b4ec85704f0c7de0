# target: softmax
# expect: import-error
# examples: 3
# static: on
# taxonomy: does not parse
def softmax(x, *, config=None)
    return x
