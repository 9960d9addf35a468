"""lib/Models/SmallCnn.cs in PyTorch, with the module and parameter names our C# model uses (state dicts move between the
two strictly). Imported by scripts/bench-pytorch.py and scripts/interop-pytorch.py (the one copy of it in Python)."""
import torch.nn as nn
import torch.nn.functional as F


class SmallCnn(nn.Module):
    """conv1 -> relu -> pool -> conv2 -> relu -> pool -> fc1 -> relu -> logits (SmallCnn.Settings: 32, 64 channels,
    `hidden` features, 10 classes, 1x28x28 inputs); features() also returns the outputs of the named layers."""

    def __init__(self, channels1=32, channels2=64, hidden=128, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels1, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(channels1, channels2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels2 * 7 * 7, hidden)
        self.relu3 = nn.ReLU()
        self.logits = nn.Linear(hidden, classes)

    def features(self, x):
        c1 = self.conv1(x)
        c2 = self.conv2(self.pool1(self.relu1(c1)))
        f1 = self.fc1(self.flatten(self.pool2(self.relu2(c2))))
        logits = self.logits(self.relu3(f1))
        # log_softmax: Representation.LogSoftmax, the reference CARSO's last representation layer.
        return logits, {"conv1": c1, "conv2": c2, "fc1": f1, "log_softmax": F.log_softmax(logits, 1)}

    def forward(self, x):
        return self.features(x)[0]
