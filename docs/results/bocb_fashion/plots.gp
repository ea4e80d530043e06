# Written by bocbc with summary.md; run with gnuplot in this directory.
set terminal pngcairo size 1000,700 noenhanced
set output 'heatmap.png'
set title 'test accuracy (%), mean over seeds'
set palette rgbformulae 33,13,10
set xtics rotate by 30 right ('mlp' 0, 'vgg' 1, 'lenet' 2, 'resnet' 3, 'vit' 4, 'mixer' 5, 'convnext' 6, 'swin' 7, 'poolformerv2' 8)
set ytics ('sgd' 0, 'sgdp' 1, 'lion' 2, 'adamw' 3, 'lamb' 4, 'adan' 5, 'radam' 6, 'adabelief' 7, 'adabound' 8, 'lars' 9, 'adagrad' 10, 'rmsprop' 11)
set xrange [-0.5:8.5]
set yrange [-0.5:11.5]
plot 'heatmap.dat' matrix with image notitle, \
     'heatmap.dat' matrix using 1:2:($3 == $3 ? sprintf('%.1f', $3) : '') with labels notitle
set xtics autofreq
set ytics autofreq
set autoscale
set key outside right
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
set grid
set output 'curves_0.png'
set title 'mlp(widths=[128, 128])'
plot 'curves.dat' index 0 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 1 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 2 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 3 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 4 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 5 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 6 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 7 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 8 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 9 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 10 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 11 using 1:2 with linespoints title 'rmsprop'
set output 'curves_1.png'
set title 'vgg(widths=[8, 16, 32], depths=[1, 1, 1], hidden=[64])'
plot 'curves.dat' index 12 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 13 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 14 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 15 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 16 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 17 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 18 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 19 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 20 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 21 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 22 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 23 using 1:2 with linespoints title 'rmsprop'
set output 'curves_2.png'
set title 'lenet'
plot 'curves.dat' index 24 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 25 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 26 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 27 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 28 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 29 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 30 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 31 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 32 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 33 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 34 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 35 using 1:2 with linespoints title 'rmsprop'
set output 'curves_3.png'
set title 'resnet(widths=[8, 16, 32], depths=[1, 1, 1])'
plot 'curves.dat' index 36 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 37 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 38 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 39 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 40 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 41 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 42 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 43 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 44 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 45 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 46 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 47 using 1:2 with linespoints title 'rmsprop'
set output 'curves_4.png'
set title 'vit(patch=7, dim=32, depth=2, heads=2)'
plot 'curves.dat' index 48 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 49 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 50 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 51 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 52 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 53 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 54 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 55 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 56 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 57 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 58 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 59 using 1:2 with linespoints title 'rmsprop'
set output 'curves_5.png'
set title 'mixer(patch=7, dim=32, depth=2, token_hidden=16, channel_hidden=64)'
plot 'curves.dat' index 60 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 61 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 62 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 63 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 64 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 65 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 66 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 67 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 68 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 69 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 70 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 71 using 1:2 with linespoints title 'rmsprop'
set output 'curves_6.png'
set title 'convnext(patch=4, dims=[16, 32], depths=[1, 1])'
plot 'curves.dat' index 72 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 73 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 74 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 75 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 76 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 77 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 78 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 79 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 80 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 81 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 82 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 83 using 1:2 with linespoints title 'rmsprop'
set output 'curves_7.png'
set title 'swin(patch=2, dims=[16, 32], depths=[1, 1], heads=[1, 2])'
plot 'curves.dat' index 84 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 85 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 86 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 87 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 88 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 89 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 90 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 91 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 92 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 93 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 94 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 95 using 1:2 with linespoints title 'rmsprop'
set output 'curves_8.png'
set title 'poolformerv2(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1])'
plot 'curves.dat' index 96 using 1:2 with linespoints title 'sgd', \
     'curves.dat' index 97 using 1:2 with linespoints title 'sgdp', \
     'curves.dat' index 98 using 1:2 with linespoints title 'lion', \
     'curves.dat' index 99 using 1:2 with linespoints title 'adamw', \
     'curves.dat' index 100 using 1:2 with linespoints title 'lamb', \
     'curves.dat' index 101 using 1:2 with linespoints title 'adan', \
     'curves.dat' index 102 using 1:2 with linespoints title 'radam', \
     'curves.dat' index 103 using 1:2 with linespoints title 'adabelief', \
     'curves.dat' index 104 using 1:2 with linespoints title 'adabound', \
     'curves.dat' index 105 using 1:2 with linespoints title 'lars', \
     'curves.dat' index 106 using 1:2 with linespoints title 'adagrad', \
     'curves.dat' index 107 using 1:2 with linespoints title 'rmsprop'
